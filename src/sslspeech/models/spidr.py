"""SpidR: DinoSR with one prediction head per upper student layer, reading that layer's
feed-forward output, and an exponential teacher EMA schedule (Poli et al. 2025), numerically as
the `spidr` package computes it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from sslspeech.errors import ConfigError
from sslspeech.models.dinosr import DinoSR, DinoSRConfig
from sslspeech.models.ema import spidr_ema_decay
from sslspeech.models.encoder import EncoderOutput, TransformerOutput
from sslspeech.models.masked import select_rows


@dataclass(frozen=True, kw_only=True)
class SpidRConfig(DinoSRConfig):
    """SpidR: DinoSR's fields (no layer drop) plus the exponential EMA schedule. The schedule
    ignores `ema_final_decay` and `ema_final_step`."""

    layer_drop: float = 0.0
    ema_timescale: float = 20000.0
    """Steps for 1 - decay to shrink by e: decay = 1 - (1 - ema_start_decay) exp(-step / it)."""
    ema_threshold: float = 1e-7
    """Once 1 - decay <= this, the decay is exactly 1 and the teacher stops moving."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.ema_timescale <= 0:
            raise ConfigError(f"ema_timescale must be > 0; got {self.ema_timescale}")


def base(**overrides: Any) -> SpidRConfig:
    """SpidR Base (the published `spidr_base`): 12 layers, 768 wide, 8 codebooks of 256."""
    return SpidRConfig(**overrides)


PRESETS = {"base": base}


class SpidR(DinoSR):
    """Student encoder, EMA teacher, K online codebooks; head j reads the feed-forward output
    (before the residual) of student layer L - K + 1 + j."""

    model_type: ClassVar[str] = "spidr"
    config_class: ClassVar[Any] = SpidRConfig
    config: SpidRConfig

    def __init__(self, config: SpidRConfig | None = None) -> None:
        """`config` None: SpidR Base."""
        super().__init__(config)
        # The student's last norm never reaches the loss: frozen, as in the reference.
        last_norm = (
            self.student.layer_norm
            if self.config.layer_norm_first
            else self.student.layers[-1].final_layer_norm
        )
        last_norm.requires_grad_(False)

    def ema_decay(self, step: int) -> float:
        """Teacher EMA decay at `step`: 1 - (1 - ema_start_decay) exp(-step / ema_timescale),
        1 once within `ema_threshold` of it."""
        cfg = self.config
        return spidr_ema_decay(step, cfg.ema_start_decay, cfg.ema_timescale, cfg.ema_threshold)

    def _head_inputs(
        self, student: TransformerOutput | EncoderOutput, index: Tensor | None
    ) -> Tensor:
        """Feed-forward outputs of the last K student layers at the selected frames (None: all):
        [codebook, frame, feature]."""
        layers = [y.flatten(0, 1) for y in student.ffn_outputs[-self.num_codebooks :]]
        if index is not None:
            layers = [select_rows(y, index) for y in layers]
        return torch.stack(layers)
