"""Published checkpoints by name: official URLs and HF ids, fetched once into the cache.

`known_huberts()` lists the released HuBERT checkpoints (fairseq, torchaudio, s3prl and
HuggingFace copies; the mHuBERT-147 iterations and the multilingual / other-language HuBERTs);
`spidr_base()`, `dinosr_base_reproduced()` and `dinosr_base_original()` load the SpidR paper's
checkpoints. Offline, a clear error names the URL and how to load a file
downloaded by hand.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from sslspeech.errors import ConfigError
from sslspeech.interop import hub
from sslspeech.models.registry import model_class, model_spec

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "KnownCheckpoint",
    "dinosr_base_original",
    "dinosr_base_reproduced",
    "hubert",
    "known_huberts",
    "spidr_base",
]


@dataclass(frozen=True)
class KnownCheckpoint:
    """One published checkpoint: where it lives and how to read it."""

    name: str
    """Registry key."""
    source: str
    """Official http(s) URL or HF model id."""
    format: str
    """On-disk format: "fairseq", "s3prl", "torchaudio", "hf", "spidr" or "dinosr_fairseq"."""
    model_type: str
    """Model class it loads into by default ("hubert" = the encoder, heads dropped)."""
    normalize_input: bool | None
    """Whether its recipe standardizes waveforms (None: as the checkpoint records it)."""
    description: str = ""
    overrides: Mapping[str, Any] = field(default_factory=dict)
    """Config fields the format does not record (torchaudio: heads, pre-/post-LN)."""

    @property
    def loader(self) -> str:
        """The call that loads a copy of the file downloaded by hand."""
        return f"{model_spec(self.model_type).class_name}.from_pretrained"

    def resolve(
        self,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        offline: bool = False,
        quiet: bool = False,
        hf_cache_dir: str | os.PathLike[str] | None = None,
    ) -> Path:
        """The local file (downloaded into `cache_dir` once) or HF snapshot folder (from the
        HF cache, `hf_cache_dir` or huggingface_hub's default)."""
        return hub.resolve(
            self.source,
            cache_dir=cache_dir,
            hf_cache_dir=hf_cache_dir,
            offline=offline,
            quiet=quiet,
            loader=self.loader,
        )

    def load(
        self,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        offline: bool = False,
        quiet: bool = False,
        **overrides: Any,
    ) -> nn.Module:
        """The model, in eval mode; `overrides` are config fields."""
        path = self.resolve(cache_dir=cache_dir, offline=offline, quiet=quiet)
        cls: Any = model_class(self.model_type)
        model: nn.Module = cls.from_pretrained(path, **{**self.overrides, **overrides})
        return model


def _hubert_entries() -> list[KnownCheckpoint]:
    fairseq = "https://dl.fbaipublicfiles.com/hubert"
    torchaudio = "https://download.pytorch.org/torchaudio/models"
    base = {"num_heads": 12, "layer_norm_first": False, "normalize_input": False}
    large = {"num_heads": 16, "layer_norm_first": True, "normalize_input": True}
    ls, ll = "LibriSpeech 960 h", "Libri-Light 60 kh"
    rows: list[tuple[str, str, str, bool | None, str, dict[str, Any]]] = [
        ("hubert_base_ls960", f"{fairseq}/hubert_base_ls960.pt", "fairseq", False, ls, {}),
        ("hubert_large_ll60k", f"{fairseq}/hubert_large_ll60k.pt", "fairseq", True, ll, {}),
        ("hubert_xtralarge_ll60k", f"{fairseq}/hubert_xtralarge_ll60k.pt", "fairseq", True, ll, {}),
        (
            "hubert_large_ll60k_finetune_ls960",
            f"{fairseq}/hubert_large_ll60k_finetune_ls960.pt",
            "fairseq",
            True,
            f"{ll}, CTC fine-tuned on {ls} (encoder only)",
            {},
        ),
        (
            "hubert_xtralarge_ll60k_finetune_ls960",
            f"{fairseq}/hubert_xtralarge_ll60k_finetune_ls960.pt",
            "fairseq",
            True,
            f"{ll}, CTC fine-tuned on {ls} (encoder only)",
            {},
        ),
        (
            "hubert_fairseq_base_ls960",
            f"{torchaudio}/hubert_fairseq_base_ls960.pth",
            "torchaudio",
            False,
            f"torchaudio copy of hubert_base_ls960 ({ls})",
            base,
        ),
        (
            "hubert_fairseq_large_ll60k",
            f"{torchaudio}/hubert_fairseq_large_ll60k.pth",
            "torchaudio",
            True,
            f"torchaudio copy of hubert_large_ll60k ({ll})",
            large,
        ),
        (
            "hubert_fairseq_xlarge_ll60k",
            f"{torchaudio}/hubert_fairseq_xlarge_ll60k.pth",
            "torchaudio",
            True,
            f"torchaudio copy of hubert_xtralarge_ll60k ({ll})",
            large,
        ),
        ("facebook/hubert-base-ls960", "facebook/hubert-base-ls960", "hf", False, ls, {}),
        ("facebook/hubert-large-ll60k", "facebook/hubert-large-ll60k", "hf", True, ll, {}),
        ("facebook/hubert-xlarge-ll60k", "facebook/hubert-xlarge-ll60k", "hf", True, ll, {}),
        (
            "facebook/hubert-large-ls960-ft",
            "facebook/hubert-large-ls960-ft",
            "hf",
            True,
            f"{ll}, CTC fine-tuned on {ls} (encoder only)",
            {},
        ),
        (
            "facebook/hubert-xlarge-ls960-ft",
            "facebook/hubert-xlarge-ls960-ft",
            "hf",
            True,
            f"{ll}, CTC fine-tuned on {ls} (encoder only)",
            {},
        ),
        (
            "utter-project/mHuBERT-147",
            "utter-project/mHuBERT-147",
            "hf",
            None,
            "multilingual HuBERT base, 147 languages (90 kh), 3rd iteration",
            {},
        ),
        *_other_language_rows(fairseq),
    ]
    return [
        KnownCheckpoint(
            name=name,
            source=source,
            format=fmt,
            model_type="hubert",
            normalize_input=normalize,
            description=description,
            overrides=MappingProxyType(overrides),
        )
        for name, source, fmt, normalize, description, overrides in rows
    ]


def _other_language_rows(fairseq: str) -> list[tuple[str, str, str, None, str, dict[str, Any]]]:
    """The multilingual and other-language HuBERTs minimal_hubert lists (and s3prl's copy of
    hubert_base_ls960); input standardization as each checkpoint records it."""
    mhubert_147 = "multilingual HuBERT base, 147 languages (90 kh)"
    rows = [
        ("mhubert_base_vp_en_es_fr_it3", f"{fairseq}/mhubert_base_vp_en_es_fr_it3.pt", "fairseq",
         "multilingual HuBERT base, VoxPopuli English, Spanish, French, 3rd iteration"),
        ("mhubert_base_vp_mls_cv_8lang_it3", f"{fairseq}/mhubert_base_vp_mls_cv_8lang_it3.pt",
         "fairseq", "multilingual HuBERT base, VoxPopuli + MLS + CommonVoice, 8 languages, "
         "3rd iteration"),
        ("s3prl/hubert_base_ls960",
         "https://huggingface.co/s3prl/converted_ckpts/resolve/main/hubert_base_ls960.pt",
         "s3prl", "s3prl's converted copy of hubert_base_ls960 (LibriSpeech 960 h)"),
        ("utter-project/mHuBERT-147-base-1st-iter", "utter-project/mHuBERT-147-base-1st-iter",
         "hf", f"{mhubert_147}, 1st iteration"),
        ("utter-project/mHuBERT-147-base-2nd-iter", "utter-project/mHuBERT-147-base-2nd-iter",
         "hf", f"{mhubert_147}, 2nd iteration"),
        ("reazon-research/japanese-hubert-base-k2", "reazon-research/japanese-hubert-base-k2",
         "hf", "Japanese HuBERT base (ReazonSpeech)"),
        ("TencentGameMate/chinese-hubert-base", "TencentGameMate/chinese-hubert-base", "hf",
         "Mandarin HuBERT base (WenetSpeech 10 kh)"),
        ("TencentGameMate/chinese-hubert-large", "TencentGameMate/chinese-hubert-large", "hf",
         "Mandarin HuBERT large (WenetSpeech 10 kh)"),
    ]  # fmt: skip
    return [(name, source, fmt, None, description, {}) for name, source, fmt, description in rows]


_SPIDR_URLS = "https://dl.fbaipublicfiles.com/shared/devai/assets/models"

#: The SpidR paper's checkpoints (facebookresearch/spidr), by function name.
SPIDR_CHECKPOINTS: dict[str, KnownCheckpoint] = {
    "spidr_base": KnownCheckpoint(
        name="spidr_base",
        source=f"{_SPIDR_URLS}/spidr_base.pt",
        format="spidr",
        model_type="spidr",
        normalize_input=True,
        description="SpidR base, LibriSpeech 960 h (facebookresearch/spidr)",
    ),
    "dinosr_base_reproduced": KnownCheckpoint(
        name="dinosr_base_reproduced",
        source=f"{_SPIDR_URLS}/dinosr_base_reproduced.pt",
        format="spidr",
        model_type="dinosr",
        normalize_input=True,
        description="DinoSR base retrained with the SpidR code base, LibriSpeech 960 h",
    ),
    "dinosr_base_original": KnownCheckpoint(
        name="dinosr_base_original",
        source="https://data.csail.mit.edu/placesaudio/dinosr/dinosr.ckpt",
        format="dinosr_fairseq",
        model_type="dinosr",
        normalize_input=True,
        description="the original DinoSR release (fairseq checkpoint), LibriSpeech 960 h",
    ),
}

_HUBERTS: dict[str, KnownCheckpoint] = {entry.name: entry for entry in _hubert_entries()}


def known_huberts() -> dict[str, KnownCheckpoint]:
    """The released HuBERT checkpoints by name (fairseq file names, torchaudio names, HF ids)."""
    return dict(_HUBERTS)


def hubert(
    name: str = "hubert_base_ls960",
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    offline: bool = False,
    quiet: bool = False,
    **overrides: Any,
) -> nn.Module:
    """A released HuBERT encoder by its `known_huberts()` name (downloaded once, cached)."""
    if name not in _HUBERTS:
        raise ConfigError(f"unknown HuBERT checkpoint {name!r}; known: {', '.join(_HUBERTS)}")
    return _HUBERTS[name].load(cache_dir=cache_dir, offline=offline, quiet=quiet, **overrides)


def _load_spidr(
    name: str,
    src: str | os.PathLike[str] | None,
    cache_dir: str | os.PathLike[str] | None,
    offline: bool,
    quiet: bool,
    overrides: dict[str, Any],
) -> nn.Module:
    entry = SPIDR_CHECKPOINTS[name]
    if src is not None:
        cls: Any = model_class(entry.model_type)
        model: nn.Module = cls.from_pretrained(src, **overrides)
        return model
    return entry.load(cache_dir=cache_dir, offline=offline, quiet=quiet, **overrides)


def spidr_base(
    src: str | os.PathLike[str] | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    offline: bool = False,
    quiet: bool = False,
    **overrides: Any,
) -> nn.Module:
    """SpidR base (LibriSpeech 960 h), from the official URL or `src` (a local copy/mirror)."""
    return _load_spidr("spidr_base", src, cache_dir, offline, quiet, overrides)


def dinosr_base_reproduced(
    src: str | os.PathLike[str] | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    offline: bool = False,
    quiet: bool = False,
    **overrides: Any,
) -> nn.Module:
    """DinoSR base as retrained with the SpidR code, from the official URL or `src`."""
    return _load_spidr("dinosr_base_reproduced", src, cache_dir, offline, quiet, overrides)


def dinosr_base_original(
    src: str | os.PathLike[str] | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    offline: bool = False,
    quiet: bool = False,
    **overrides: Any,
) -> nn.Module:
    """The original DinoSR fairseq checkpoint, from the official URL or `src`."""
    return _load_spidr("dinosr_base_original", src, cache_dir, offline, quiet, overrides)
