"""HuBERT: the encoder (`HuBERT`) and the masked-prediction pretraining model (`HuBERTPretrain`),
numerically as fairseq / torchaudio / transformers compute them."""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sslspeech.errors import DataError
from sslspeech.models.configs import HuBERTConfig, HuBERTPretrainConfig
from sslspeech.models.dropin import lengths_from_attention_mask
from sslspeech.models.encoder import Encoder, EncoderModel, EncoderOutput
from sslspeech.models.masked import MaskedFrames, resolve_mask, select_rows
from sslspeech.models.pretrained import Pretrained


class HuBERT(EncoderModel):
    """HuBERT encoder: `m(waveforms, lengths)` -> (B, T, D) final output."""

    model_type = "hubert"
    config_class = HuBERTConfig

    def __init__(self, config: HuBERTConfig | None = None) -> None:
        """`config` None: HuBERT Base."""
        super().__init__()
        self.config = HuBERTConfig() if config is None else config
        self.encoder = Encoder(self.config)

    def forward(
        self,
        waveforms: Tensor,
        lengths: Tensor | None = None,
        *,
        attention_mask: Tensor | None = None,
    ) -> Tensor:
        """[batch, sample] (+ valid samples [batch], or an HF `attention_mask` [batch, sample]
        with 1 = valid sample) -> [batch, frame, feature]."""
        return self.encode(
            waveforms, lengths_from_attention_mask(attention_mask, lengths, waveforms)
        )

    @classmethod
    def adapt_checkpoint(cls, loaded: Any) -> Any:
        """A pretraining checkpoint gives its encoder (heads dropped)."""
        if loaded.model_type != "hubert_pretrain":
            return super().adapt_checkpoint(loaded)
        fields = {field.name for field in dataclasses.fields(HuBERTConfig)}
        config = {key: value for key, value in loaded.config.items() if key in fields}
        state = {
            key: value for key, value in loaded.state_dict.items() if key.startswith("encoder.")
        }
        return dataclasses.replace(
            loaded, model_type=cls.model_type, config=config, state_dict=state
        )


class _GradMultiply(torch.autograd.Function):
    """Identity forward, gradient scaled by `scale` (fairseq GradMultiply)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return x.clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad * ctx.scale, None


class PretrainOutput(NamedTuple):
    """Masked-prediction logits and what the loss needs."""

    logit_m: Tensor
    """[masked frames, 1 + rows]: column 0 = positive, then every label-embedding row (-inf at
    the positive row); masked valid frames in (batch, frame) order."""
    logit_u: Tensor
    """Same for unmasked valid frames."""
    features_pen: Tensor
    """Mean squared conv feature (after label-rate trimming)."""
    encoder: EncoderOutput
    """Encoder outputs of the masked input."""
    mask: Tensor
    """[batch, frame] bool mask used (trimmed to the frames in use, padding never masked)."""


class PretrainLoss(NamedTuple):
    """One batch's masked-prediction loss as a sum: the caller reduces (total / num_frames)."""

    total: Tensor
    """Scalar: the weighted cross-entropy sums (+ feature penalty) over the counted frames."""
    num_frames: int
    """Frames the sum covers: masked (+ unmasked when `pred_nomask_weight` > 0)."""
    stats: dict[str, Tensor]
    """Detached per-frame means `loss_m`, `loss_u`, accuracies `acc_m`, `acc_u`, `features_pen`."""


class HuBERTPretrain(HuBERT):
    """HuBERT with mask embedding, final projection and label embeddings:
    `total, num_frames, stats = m(waveforms, labels, mask=mask, lengths=lengths)`."""

    model_type = "hubert_pretrain"
    config_class = HuBERTPretrainConfig
    config: HuBERTPretrainConfig

    def __init__(self, config: HuBERTPretrainConfig | int | None = None) -> None:
        """`config` None: HuBERT Base with 500 classes; an int: Base with that many classes
        (minimal_hubert's `HuBERTPretrain(num_classes)`)."""
        if config is None:
            config = HuBERTPretrainConfig()
        elif not isinstance(config, HuBERTPretrainConfig):
            config = HuBERTPretrainConfig(num_classes=config)
        super().__init__(config)
        self.mask_embedding = nn.Parameter(torch.empty(config.embed_dim).uniform_())
        self.final_proj = nn.Linear(config.embed_dim, config.final_dim)
        rows = config.num_special_labels + config.num_classes
        self.label_embeddings = nn.Parameter(torch.empty(rows, config.final_dim))
        nn.init.uniform_(self.label_embeddings)
        rate = config.label_rate or 0.0
        self.labels_per_frame = rate * config.samples_per_frame / config.sample_rate
        """Labels per conv frame, r of `align_labels` (worked out once: not in the forward)."""

    @classmethod
    def adapt_checkpoint(cls, loaded: Any) -> Any:
        """Only pretraining checkpoints have the heads."""
        return Pretrained.adapt_checkpoint.__func__(cls, loaded)  # type: ignore[attr-defined]

    def forward(  # type: ignore[override]
        self,
        waveforms: Tensor,
        labels: Tensor,
        mask: Tensor | MaskedFrames | None = None,
        lengths: Tensor | None = None,
        *,
        attention_mask: Tensor | None = None,
    ) -> PretrainLoss:
        """Summed masked-prediction loss, the frames it covers and detached stats.

        total = w_m * CE_masked_sum + w_u * CE_unmasked_sum + w_pen * features_pen * count, with
        count = n_masked (+ n_unmasked when `pred_nomask_weight` > 0): fairseq HubertCriterion's
        loss and sample_size (its loss per frame is total / count). `labels`, `mask`: see
        `compute_logits`. An HF `attention_mask` [batch, sample] (1 = valid sample) may replace
        `lengths`.
        """
        lengths = lengths_from_attention_mask(attention_mask, lengths, waveforms)
        out = self.compute_logits(waveforms, labels, mask, lengths)
        cfg = self.config
        zeros_m = out.logit_m.new_zeros(out.logit_m.shape[0], dtype=torch.long)
        zeros_u = out.logit_u.new_zeros(out.logit_u.shape[0], dtype=torch.long)
        loss_m = F.cross_entropy(out.logit_m.float(), zeros_m, reduction="sum")
        loss_u = F.cross_entropy(out.logit_u.float(), zeros_u, reduction="sum")
        n_masked, n_unmasked = out.logit_m.shape[0], out.logit_u.shape[0]
        total = out.features_pen.new_zeros(())
        count = 0
        if cfg.pred_masked_weight > 0:
            total = total + cfg.pred_masked_weight * loss_m
            count += n_masked
        if cfg.pred_nomask_weight > 0:
            total = total + cfg.pred_nomask_weight * loss_u
            count += n_unmasked
        if cfg.feature_penalty_weight != 0:
            total = total + cfg.feature_penalty_weight * out.features_pen * count
        stats = {
            "loss_m": loss_m.detach() / max(n_masked, 1),
            "loss_u": loss_u.detach() / max(n_unmasked, 1),
            "acc_m": _accuracy(out.logit_m),
            "acc_u": _accuracy(out.logit_u),
            "features_pen": out.features_pen.detach(),
        }
        return PretrainLoss(total, count, stats)

    def compute_logits(
        self,
        waveforms: Tensor,
        labels: Tensor,
        mask: Tensor | MaskedFrames | None = None,
        lengths: Tensor | None = None,
    ) -> PretrainOutput:
        """Logits of masked and unmasked valid frames (fairseq `logit_m_list[0]` /
        `logit_u_list[0]`, torchaudio `logit_m` / `logit_u`).

        `labels` are cluster ids 0..K-1 at the config's label rate. `mask`: [batch, frame] bool
        (True = masked; lengths and labels are checked here, with host syncs) or the collator's
        `MaskedFrames` (checked by the data side: no host sync); None: nothing is masked, in
        eval mode only (masks are drawn by the data side, `sslspeech.data.masking`).
        """
        cfg = self.config
        if isinstance(mask, MaskedFrames):
            features, _ = self.encoder.feature_extractor(waveforms)
        else:
            features, _ = self.encoder.extract(waveforms, lengths)
            _check_labels(labels, cfg.num_classes)
        if self.training and cfg.feature_grad_mult != 1.0:
            if cfg.feature_grad_mult > 0:
                features = _GradMultiply.apply(features, cfg.feature_grad_mult)
            else:
                features = features.detach()
        features, labels = self.align_labels(features, labels)
        num_frames = features.shape[1]
        features_pen = features.float().pow(2).mean()
        frame_lengths = None
        if lengths is not None:
            frame_lengths = self.encoder.feature_extractor.frame_lengths(
                lengths, waveforms.shape[1], num_frames
            ).clamp(max=num_frames)
        frames = resolve_mask(mask, features, frame_lengths, self.training)
        x = self.encoder.feature_projection(features)
        x = torch.where(frames.mask.unsqueeze(-1), self.mask_embedding.to(x.dtype), x)
        encoded = self.encoder.transformer(x, frame_lengths, padded=frames.padded)
        output = encoded.output.flatten(0, 1)
        targets = (labels + cfg.num_special_labels).flatten()
        logit_m = self._logits(select_rows(output, frames.masked), targets[frames.masked])
        logit_u = self._logits(select_rows(output, frames.unmasked), targets[frames.unmasked])
        enc = EncoderOutput(
            encoded.output,
            encoded.layer_outputs,
            encoded.ffn_outputs,
            encoded.layer_input,
            frame_lengths,
            features,
        )
        return PretrainOutput(logit_m, logit_u, features_pen, enc, frames.mask)

    def align_labels(self, features: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """fairseq `forward_targets`: with r = label_rate * samples_per_frame / sample_rate, trim
        the frames to int(len(labels) / r) when labels run short and pick labels[int(t * r)]."""
        cfg = self.config
        labels = torch.as_tensor(labels, device=features.device).long()
        if labels.ndim != 2 or labels.shape[0] != features.shape[0]:
            raise DataError(
                f"labels must be (batch, time) with batch {features.shape[0]}; got "
                f"{tuple(labels.shape)}"
            )
        num_frames = features.shape[1]
        if cfg.label_rate is None:
            if labels.shape[1] != num_frames:
                raise DataError(
                    f"{labels.shape[1]} labels for {num_frames} frames; this checkpoint needs "
                    "exactly one label per frame (label_rate is null)"
                )
            return features, labels
        ratio = self.labels_per_frame
        if ratio * num_frames > labels.shape[1]:
            num_frames = int(labels.shape[1] / ratio)
            features = features[:, :num_frames]
        index = (torch.arange(num_frames, device=labels.device).float() * ratio).long()
        return features, labels[:, index]

    def _logits(self, x: Tensor, targets: Tensor) -> Tensor:
        """Cosine similarity / logit_temp of final_proj(x) with the positive row (column 0) and
        every label-embedding row, -inf where a row equals the positive (fairseq compute_nce)."""
        proj = self.final_proj(x)
        embeddings = self.label_embeddings
        sims = (
            F.normalize(proj.float(), dim=-1, eps=1e-8)
            @ F.normalize(embeddings.float(), dim=-1, eps=1e-8).T
        )
        sims = sims / self.config.logit_temp
        positive = sims.gather(1, targets.unsqueeze(1))
        same = (embeddings.unsqueeze(1) == embeddings.unsqueeze(0)).all(-1)
        negatives = sims.masked_fill(same[targets], float("-inf"))
        return torch.cat([positive, negatives], dim=1).to(proj.dtype)


def _check_labels(labels: Tensor, num_classes: int) -> None:
    """Labels are cluster ids in [0, num_classes) (a host sync; the trainer's collator checks
    them on the CPU instead)."""
    labels = torch.as_tensor(labels)
    if bool(((labels < 0) | (labels >= num_classes)).any()):
        raise DataError(f"labels must be cluster ids in [0, {num_classes})")


def _accuracy(logits: Tensor) -> Tensor:
    """fairseq compute_correct: share of rows whose argmax is the positive column (rows where
    argmax and argmin are both 0 are not counted as correct)."""
    if logits.shape[0] == 0:
        return logits.new_zeros(())
    best = logits.argmax(-1) == 0
    worst = logits.argmin(-1) == 0
    return (best & ~worst).float().mean().detach()
