"""sslspeech: pretrain HuBERT, DinoSR and SpidR, extract features and units, evaluate them."""

from importlib import import_module
from typing import Any

from sslspeech.errors import SSLSpeechError

__version__ = "0.1.0"

# Public names resolved on first use, so `import sslspeech` stays cheap (no torch at import).
_LAZY = {
    "HuBERT": "sslspeech.models.hubert",
    "HuBERTPretrain": "sslspeech.models.hubert",
    "SpidR": "sslspeech.models.spidr",
    "DinoSR": "sslspeech.models.dinosr",
    "spidr_base": "sslspeech.interop.registry",
    "dinosr_base_reproduced": "sslspeech.interop.registry",
    "dinosr_base_original": "sslspeech.interop.registry",
    "known_huberts": "sslspeech.interop.registry",
}

__all__ = ["SSLSpeechError", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sslspeech' has no attribute {name!r}")
