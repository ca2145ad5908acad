"""DinoSR: a student encoder predicts, at masked frames, the online-codebook assignment of an
EMA teacher's layer outputs (Liu et al. 2023), numerically as the `spidr` package computes it.

`loss, stats = m(waveforms, mask=mask, lengths=lengths)` (per-frame losses); in train mode the
same call gathers the online codebooks' statistics. The training loop calls
`m.update_teacher(step)` once after each optimizer step: it applies the statistics of every
micro-batch since the last step (all-reduced over the ranks when distributed, the one
collective the model runs itself: see `sslspeech.models.codebook`) and moves the EMA teacher.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sslspeech.errors import ConfigError
from sslspeech.models.codebook import OnlineCodebooks, PredictionHeads, masked_prediction_loss
from sslspeech.models.configs import EncoderConfig
from sslspeech.models.ema import dinosr_ema_decay, ema_update_
from sslspeech.models.encoder import (
    Encoder,
    EncoderModel,
    EncoderOutput,
    Transformer,
    TransformerOutput,
    check_lengths,
)
from sslspeech.models.masked import MaskedFrames, resolve_mask, select_rows


@dataclass(frozen=True, kw_only=True)
class DinoSRConfig(EncoderConfig):
    """DinoSR: the encoder fields (SpidR/DinoSR base defaults) plus codebooks and EMA teacher.
    Field names of the `spidr` package's DinoSRConfig are given as (spidr `name`)."""

    extractor_mode: str = "layer_norm"
    pos_conv_kernel: int = 95
    pos_conv_depth: int = 5
    qkv_bias: bool = False
    projection_dropout: float = 0.0
    normalize_input: bool = True
    """Whether the recipe standardizes each waveform (SpidR and DinoSR: yes)."""
    codebook_size: int = 256
    """Codewords V per codebook (fairseq and spidr `codebook_size`)."""
    codebook_decay: float = 0.9
    """EMA decay of the codebook sums and counts (spidr `codebook_decay`, fairseq
    `codebook_init_decay`)."""
    num_codebooks: int = 8
    """Codebooks K, one per teacher layer among the last K (fairseq `average_top_k_layers`)."""
    ema_start_decay: float = 0.999
    """Teacher EMA decay at step 0 (fairseq `ema_decay`)."""
    ema_final_decay: float = 0.9999
    """Teacher EMA decay from `ema_final_step` on (fairseq `ema_end_decay`)."""
    ema_final_step: int = 30000
    """End of the linear decay ramp (fairseq `ema_anneal_end_step`)."""
    ema_exclude_layers: tuple[str, ...] = ("pos_conv_embed",)
    """Teacher parameters (name prefixes) copied from the student instead of averaged (fairseq
    `ema_layers_only`: the positional conv)."""
    freeze_step: int = 200000
    """From this step the teacher is frozen (decay 1) and the conv extractor and projection stop
    training (fairseq `freeze_teacher_step`)."""
    mask_prob: float = 0.8
    """Span-start probability of the training masks: a record of the recipe's `[masking]`
    (the data side draws the masks; the model never reads it)."""
    mask_length: int = 10
    """Span length (frames) of the training masks (a record, as `mask_prob`)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "ema_exclude_layers", tuple(self.ema_exclude_layers))
        layers = tuple(tuple(layer) for layer in self.extractor_conv_layers)
        object.__setattr__(self, "extractor_conv_layers", layers)
        super().__post_init__()
        if not 1 <= self.num_codebooks <= self.num_layers:
            raise ConfigError(
                f"num_codebooks must be in [1, num_layers={self.num_layers}]; "
                f"got {self.num_codebooks}"
            )
        if self.codebook_size < 1:
            raise ConfigError(f"codebook_size must be >= 1; got {self.codebook_size}")
        for name in ("codebook_decay", "ema_start_decay", "ema_final_decay"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1]; got {getattr(self, name)}")
        if self.pos_conv_depth < 2:
            raise ConfigError(
                f"pos_conv_depth must be >= 2 for SpidR/DinoSR (multi-conv positional embedding); "
                f"got {self.pos_conv_depth}"
            )
        if self.ema_final_step < 1:
            raise ConfigError(f"ema_final_step must be >= 1; got {self.ema_final_step}")
        if not all(isinstance(prefix, str) for prefix in self.ema_exclude_layers):
            raise ConfigError(
                f"ema_exclude_layers must be a list of name prefixes; got {self.ema_exclude_layers}"
            )

    def min_parameters(self) -> int:
        """The encoder's bound plus the K prediction heads and codebooks (V x D each)."""
        codebooks = self.num_codebooks * self.codebook_size * self.embed_dim
        return super().min_parameters() + 2 * codebooks


INSTANCE_NORM_EPS = 1e-5


def base(**overrides: Any) -> DinoSRConfig:
    """DinoSR Base as reproduced by the `spidr` package: 12 layers, 768 wide, 8 codebooks of 256,
    no q/k/v bias, layer drop 0.05."""
    return DinoSRConfig(**overrides)


def base_original(**overrides: Any) -> DinoSRConfig:
    """The original fairseq DinoSR Base (same shapes, q/k/v projections with biases)."""
    return DinoSRConfig(**{"qkv_bias": True, **overrides})


PRESETS = {"base": base, "base_original": base_original}


def mask_from_indices(indices: Tensor, num_frames: int) -> Tensor:
    """(batch, masked) frame indices (the `spidr` package's `mask_indices`) -> (batch, frame)
    bool mask."""
    mask = torch.zeros(indices.shape[0], num_frames, dtype=torch.bool, device=indices.device)
    return mask.scatter_(1, indices.long(), True)


def _init_transformer_(module: nn.Module) -> None:
    """The `spidr` package's transformer init: q/k/v Xavier (gain 1/sqrt 2), output projection
    Xavier with zero bias, every other Linear N(0, 0.02) with zero bias."""
    for name, child in module.named_modules():
        if not isinstance(child, nn.Linear):
            continue
        if name.endswith("attention.qkv"):
            nn.init.xavier_uniform_(child.weight, gain=2**-0.5)
            if child.bias is not None:
                nn.init.zeros_(child.bias)
        elif name.endswith("attention.proj"):
            nn.init.xavier_uniform_(child.weight)
            nn.init.zeros_(child.bias)
        else:
            nn.init.normal_(child.weight, std=0.02)
            if child.bias is not None:
                nn.init.zeros_(child.bias)


class DinoSR(EncoderModel):
    """Student encoder, EMA teacher transformer, K prediction heads and K online codebooks.

    Every head reads the student's final output (see `SpidR` for per-layer heads).
    """

    model_type: ClassVar[str] = "dinosr"
    config_class: ClassVar[Any] = DinoSRConfig
    config: DinoSRConfig
    current_step: Tensor

    def __init__(self, config: DinoSRConfig | None = None) -> None:
        """`config` None: the Base preset."""
        super().__init__()
        config = self.config_class() if config is None else config
        self.config = config
        self.encoder = Encoder(config)
        self.encoder.transformer.zero_padding = False  # as the reference (see Transformer)
        self.teacher = copy.deepcopy(self.encoder.transformer)
        self.heads = PredictionHeads(config.num_codebooks, config.embed_dim, config.codebook_size)
        self.codebooks = OnlineCodebooks(
            config.num_codebooks, config.codebook_size, config.embed_dim, config.codebook_decay
        )
        self.mask_embedding = nn.Parameter(torch.empty(config.embed_dim).uniform_())
        self.register_buffer("current_step", torch.zeros(1, dtype=torch.long))
        for module in self.encoder.feature_extractor.modules():
            if isinstance(module, nn.Conv1d):
                nn.init.kaiming_normal_(module.weight)
        _init_transformer_(self.encoder.transformer)
        _init_transformer_(self.teacher)  # its own draw, as the reference
        self.teacher.requires_grad_(False)
        self.teacher.eval()

    # ----------------------------------------------------------------------------- basics

    @property
    def num_codebooks(self) -> int:
        """Number of codebooks (and prediction heads) K."""
        return self.config.num_codebooks

    @property
    def student(self) -> Transformer:
        """The student transformer (`encoder.transformer`), which the teacher mirrors."""
        return self.encoder.transformer

    def train(self, mode: bool = True) -> Self:
        """Train/eval mode for everything but the teacher, which always runs in eval mode."""
        super().train(mode)
        self.teacher.eval()
        return self

    # ----------------------------------------------------------------------------- teacher

    def ema_decay(self, step: int) -> float:
        """Teacher EMA decay at `step`: linear from `ema_start_decay` to `ema_final_decay` over
        `ema_final_step` steps, then constant, then 1 from `freeze_step` on."""
        cfg = self.config
        return dinosr_ema_decay(
            step, cfg.ema_start_decay, cfg.ema_final_decay, cfg.ema_final_step, cfg.freeze_step
        )

    def freeze_extractor(self) -> None:
        """Stop training the conv extractor and the feature projection."""
        self.encoder.feature_extractor.requires_grad_(False)
        self.encoder.feature_projection.requires_grad_(False)

    @torch.no_grad()
    def update_teacher(self, step: int) -> float:
        """After optimizer step `step`: apply the codebook statistics gathered since the last
        step, then the EMA update of the teacher towards the student; returns the decay used.

        Records `step` in `current_step`; from `freeze_step` on freezes the extractor. Parameters
        under `ema_exclude_layers` (and buffers) are copied; nothing moves when decay is 0 or 1.
        """
        self.codebooks.apply_update()
        self.current_step.fill_(step)
        decay = self.ema_decay(step)
        if step >= self.config.freeze_step:
            self.freeze_extractor()
        ema_update_(self.teacher, self.student, decay, self.config.ema_exclude_layers)
        return decay

    # ----------------------------------------------------------------------------- training

    def forward(
        self,
        waveforms: Tensor,
        mask: Tensor | MaskedFrames | None = None,
        lengths: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Per-masked-frame loss [masked frames] (row-major) and stats {"target_ppl", "pred_ppl"};
        the caller reduces it (sum and count, or mean).

        `mask`: [batch, frame] bool, True = masked (frames replaced by the mask embedding and
        predicted; lengths are checked here, with host syncs), or the collator's `MaskedFrames`
        (no host sync). None: nothing is masked and every valid frame is predicted, in eval mode
        only (masks are drawn by the data side, `sslspeech.data.masking`). In train mode the
        call gathers codebook statistics, applied by `update_teacher` after the optimizer step.
        """
        features, frame_lengths = self.encoder.extract(waveforms, lengths)
        if lengths is not None and not isinstance(mask, MaskedFrames):
            check_lengths(lengths, waveforms.shape[1], self.config.receptive_field)
        projection = self.encoder.feature_projection
        feats = projection.layer_norm(features)
        if projection.projection is not None:
            feats = projection.projection(feats)
        x = projection.dropout(feats)
        frames = resolve_mask(mask, x, frame_lengths, self.training)
        if mask is not None:
            x = torch.where(frames.mask.unsqueeze(-1), self.mask_embedding.to(x.dtype), x)
        index = frames.unmasked if mask is None else frames.masked
        student = self.student(x, frame_lengths, padded=frames.padded)
        with torch.no_grad():
            targets = self._teacher_targets(feats, frame_lengths, index, frames.padded)
            labels = self.codebooks.assign(targets)
            if self.training:
                self.codebooks.accumulate(targets, labels)
        log_probs = self.heads(self._head_inputs(student, index))
        return masked_prediction_loss(log_probs, labels)

    def _head_inputs(
        self, student: TransformerOutput | EncoderOutput, index: Tensor | None
    ) -> Tensor:
        """What the heads read at the selected frames (None: all): the student's final output,
        [frame, feature]."""
        x = student.output.flatten(0, 1)
        return x if index is None else select_rows(x, index)

    def _teacher_targets(
        self, feats: Tensor, frame_lengths: Tensor | None, index: Tensor, padded: bool
    ) -> Tensor:
        """Teacher FFN outputs of the last K layers on the unmasked input, instance-normalized
        over time (padding included, as the reference), at the selected frames:
        [codebook, frame, feature] float32."""
        # Detached (no_grad views of the student's features would still require grad, which
        # module hooks such as torch's FLOP counter trip over).
        teacher = self.teacher(feats.detach(), frame_lengths, padded=padded)
        stacked = torch.stack(teacher.ffn_outputs[-self.num_codebooks :]).float().flatten(0, 1)
        # F.instance_norm exactly as the reference (its statistics decide near-tie codewords
        # and the codebook sums; a two-pass variance drifts ~10x further from the fixtures).
        normed = F.instance_norm(stacked.transpose(1, 2), eps=INSTANCE_NORM_EPS).transpose(1, 2)
        normed = normed.reshape(self.num_codebooks, -1, normed.shape[-1])
        return normed.index_select(1, index)

    # ----------------------------------------------------------------------------- units

    @torch.no_grad()
    def head_probabilities(
        self, student: TransformerOutput | EncoderOutput, index: Tensor | None = None
    ) -> Tensor:
        """Codeword probabilities (float32) of every head from a pass of the student, at the flat
        frames `index` of its [batch * frame] outputs (None: all): [codebook, frame, codeword]."""
        return self.heads(self._head_inputs(student, index)).float().exp()

    @torch.no_grad()
    def get_codebooks(
        self, waveforms: Tensor, lengths: Tensor | None = None, onehot: bool = False
    ) -> list[Tensor]:
        """Head predictions on the unmasked input: one [batch, frame, codeword] tensor per
        codebook, probabilities (float32) or, with `onehot`, the int64 one-hot of the argmax."""
        student = self.encoder(waveforms, lengths)
        probs = self.head_probabilities(student)
        batch, frames = student.output.shape[:2]
        probs = probs.view(self.num_codebooks, batch, frames, -1)
        if onehot:
            probs = F.one_hot(probs.argmax(-1), probs.shape[-1])
        return list(probs.unbind(0))
