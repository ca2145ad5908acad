"""Synthetic phone-aligned speech from espeak-ng, for tests, the demo and evaluation."""

from sslspeech.synth.corpus import VOICES, make_corpus

__all__ = ["VOICES", "make_corpus"]
