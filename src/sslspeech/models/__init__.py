"""Models: one encoder built from small parts, and HuBERT, HuBERTPretrain, DinoSR, SpidR on top."""

from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY = {
    "HuBERT": "sslspeech.models.hubert",
    "HuBERTPretrain": "sslspeech.models.hubert",
    "SpidR": "sslspeech.models.spidr",
    "DinoSR": "sslspeech.models.dinosr",
    "EncoderConfig": "sslspeech.models.configs",
    "HuBERTConfig": "sslspeech.models.configs",
    "HuBERTPretrainConfig": "sslspeech.models.configs",
    "Encoder": "sslspeech.models.encoder",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sslspeech.models' has no attribute {name!r}")
