"""The command line: `sslspeech` and `python -m sslspeech` exist and list every subcommand."""

import subprocess
import sys

import sslspeech
from sslspeech.cli import COMMANDS, main


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == sslspeech.__version__


def test_python_dash_m_lists_subcommands():
    out = subprocess.run(
        [sys.executable, "-m", "sslspeech", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for name in COMMANDS:
        assert name in out


def test_errors_share_one_base():
    from sslspeech import errors

    for name in ("ConfigError", "CheckpointError", "UnsafePickleError", "DataError"):
        assert issubclass(getattr(errors, name), sslspeech.SSLSpeechError)
