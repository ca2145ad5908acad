"""torch.hub entry points: `torch.hub.load(repo, "spidr_base")`, `"hubert"`, ...

Each entry point downloads the official checkpoint once (cached) and returns the model in
eval mode with the CPU inference fast paths; keyword arguments are those of
`sslspeech.interop.registry` (`cache_dir`, `offline`, config overrides). `load_model(src)`
reads any supported checkpoint.
"""

from __future__ import annotations

import importlib as _importlib
import sys as _sys
from pathlib import Path as _Path
from typing import Any as _Any

dependencies = ["torch", "numpy"]


def _import(module: str) -> _Any:
    """An sslspeech module from this checkout's src/ (unless an sslspeech is already imported)."""
    src = str(_Path(__file__).resolve().parent / "src")
    added = src not in _sys.path
    if added:
        _sys.path.insert(0, src)
    try:
        return _importlib.import_module(module)
    finally:
        if added:
            _sys.path.remove(src)


def _for_inference(model: _Any) -> _Any:
    """`model` with the CPU inference fast paths (plain modules everywhere else)."""
    return _import("sslspeech.models.cpu_inference").optimize_for_cpu_inference(model)


def hubert(name: str = "hubert_base_ls960", **kwargs: _Any) -> _Any:
    """A released HuBERT encoder by name (see `sslspeech.known_huberts()`)."""
    return _for_inference(_import("sslspeech.interop.registry").hubert(name, **kwargs))


def spidr_base(src: str | None = None, **kwargs: _Any) -> _Any:
    """SpidR base (LibriSpeech 960 h); `src` points at a local copy or mirror."""
    return _for_inference(_import("sslspeech.interop.registry").spidr_base(src, **kwargs))


def dinosr_base_reproduced(src: str | None = None, **kwargs: _Any) -> _Any:
    """DinoSR base retrained with the SpidR code (LibriSpeech 960 h)."""
    return _for_inference(
        _import("sslspeech.interop.registry").dinosr_base_reproduced(src, **kwargs)
    )


def dinosr_base_original(src: str | None = None, **kwargs: _Any) -> _Any:
    """The original DinoSR release (fairseq checkpoint)."""
    return _for_inference(_import("sslspeech.interop.registry").dinosr_base_original(src, **kwargs))


def load_model(src: str, **overrides: _Any) -> _Any:
    """Any supported checkpoint (file, folder, URL or HF id), format detected from content."""
    return _for_inference(_import("sslspeech.models").load_model(src, **overrides))
