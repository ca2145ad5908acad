"""torch.hub entry points: `torch.hub.load(repo, "spidr_base")`, `"hubert"`, ...

Each entry point downloads the official checkpoint once (cached) and returns the model in
eval mode; keyword arguments are those of `sslspeech.interop.registry` (`cache_dir`,
`offline`, config overrides). `load_model(src)` reads any supported checkpoint.
"""

from __future__ import annotations

import sys as _sys
from pathlib import Path as _Path
from typing import Any as _Any

dependencies = ["torch", "numpy"]


def _import_registry() -> _Any:
    """sslspeech from this checkout's src/ (unless an sslspeech is already imported)."""
    src = str(_Path(__file__).resolve().parent / "src")
    added = src not in _sys.path
    if added:
        _sys.path.insert(0, src)
    try:
        from sslspeech.interop import registry
    finally:
        if added:
            _sys.path.remove(src)
    return registry


def hubert(name: str = "hubert_base_ls960", **kwargs: _Any) -> _Any:
    """A released HuBERT encoder by name (see `sslspeech.known_huberts()`)."""
    return _import_registry().hubert(name, **kwargs)


def spidr_base(src: str | None = None, **kwargs: _Any) -> _Any:
    """SpidR base (LibriSpeech 960 h); `src` points at a local copy or mirror."""
    return _import_registry().spidr_base(src, **kwargs)


def dinosr_base_reproduced(src: str | None = None, **kwargs: _Any) -> _Any:
    """DinoSR base retrained with the SpidR code (LibriSpeech 960 h)."""
    return _import_registry().dinosr_base_reproduced(src, **kwargs)


def dinosr_base_original(src: str | None = None, **kwargs: _Any) -> _Any:
    """The original DinoSR release (fairseq checkpoint)."""
    return _import_registry().dinosr_base_original(src, **kwargs)


def load_model(src: str, **overrides: _Any) -> _Any:
    """Any supported checkpoint (file, folder, URL or HF id), format detected from content."""
    _import_registry()
    from sslspeech.models import load_model as load

    return load(src, **overrides)
