"""`python -m sslspeech.synth.worker`: synthesize one speaker's utterances in a fresh process.

Reads the job (JSON) on stdin, writes the WAV files, prints the utterance records (JSON) on
stdout. A process of its own per speaker keeps espeak-ng's carried-over synthesis state out of
the result, and a plain subprocess (unlike multiprocessing's spawn) never re-runs the caller's
main module.
"""

from __future__ import annotations

import json
import sys


def main() -> int:
    from sslspeech.synth.corpus import speaker_job

    job = json.loads(sys.stdin.read())
    json.dump(speaker_job(job), sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
