"""Tiny random SpidR/DinoSR checkpoints (50 Hz conv stack, 3 layers, codebooks on the last 2)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

CONV = ((16, 10, 5),) + ((16, 3, 2),) * 4 + ((16, 2, 2),) * 2
TINY: dict[str, Any] = {
    "extractor_conv_layers": CONV,
    "embed_dim": 32,
    "ffn_dim": 64,
    "num_layers": 3,
    "num_heads": 2,
    "pos_conv_kernel": 15,
    "pos_conv_groups": 4,
    "num_codebooks": 2,
    "codebook_size": 8,
    "dropout": 0.0,
    "attention_dropout": 0.0,
}


def tiny_codebook_model(model_type: str, directory: Path | None = None, **overrides: Any) -> Any:
    """A random tiny "spidr" or "dinosr" model in eval mode (saved natively to `directory`)."""
    from sslspeech.models.dinosr import DinoSR, DinoSRConfig
    from sslspeech.models.spidr import SpidR, SpidRConfig

    torch.manual_seed(0)
    cls, config_class = (SpidR, SpidRConfig) if model_type == "spidr" else (DinoSR, DinoSRConfig)
    model = cls(config_class(**{**TINY, **overrides})).eval()
    with torch.no_grad():  # sharper heads than the random init: several codewords get used
        model.heads.weight.mul_(20.0)
    if directory is not None:
        model.save_pretrained(directory)
    return model
