"""One module per `sslspeech` subcommand: `configure(parser)` declares options, `run(args)` acts.

Command modules import heavy dependencies inside `run`, so `sslspeech --help` stays fast.
"""
