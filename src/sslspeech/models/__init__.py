"""Models: one encoder built from small parts, and HuBERT, HuBERTPretrain, DinoSR, SpidR on top."""

from __future__ import annotations

from sslspeech.utils.lazy import lazy_getattr

_LAZY = {
    "HuBERT": "sslspeech.models.hubert",
    "HuBERTPretrain": "sslspeech.models.hubert",
    "SpidR": "sslspeech.models.spidr",
    "DinoSR": "sslspeech.models.dinosr",
    "EncoderConfig": "sslspeech.models.configs",
    "HuBERTConfig": "sslspeech.models.configs",
    "HuBERTPretrainConfig": "sslspeech.models.configs",
    "Encoder": "sslspeech.models.encoder",
    "MODELS": "sslspeech.models.registry",
    "ModelSpec": "sslspeech.models.registry",
    "load_model": "sslspeech.models.registry",
    "model_class": "sslspeech.models.registry",
    "model_spec": "sslspeech.models.registry",
}

__all__ = list(_LAZY)

__getattr__ = lazy_getattr(__name__, _LAZY)
