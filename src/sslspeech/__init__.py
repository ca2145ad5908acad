"""sslspeech: pretrain HuBERT, DinoSR and SpidR, extract features and units, evaluate them."""

from sslspeech.errors import SSLSpeechError
from sslspeech.utils.lazy import lazy_getattr

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

__getattr__ = lazy_getattr(__name__, _LAZY)
