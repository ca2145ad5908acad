"""`python -m sslspeech` is the `sslspeech` command."""

from sslspeech.cli import main

raise SystemExit(main())
