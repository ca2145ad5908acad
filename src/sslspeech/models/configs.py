"""Model configurations: frozen, keyword-only dataclasses with one docstring per field.

`EncoderConfig` describes the shared encoder (conv extractor, projection, positional conv,
transformer); model configs extend it with flat fields, so a `config.json` is one flat mapping
(`{"model_type": ..., **fields}`). Field docstrings give the fairseq name where one exists.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self

from sslspeech.errors import CheckpointError, ConfigError

if TYPE_CHECKING:
    from torch import Tensor

ConvLayers = tuple[tuple[int, int, int], ...]

#: The wav2vec 2.0 / HuBERT conv stack: 7 layers, 512 channels, 320 samples per frame.
BASE_CONV_LAYERS: ConvLayers = ((512, 10, 5),) + ((512, 3, 2),) * 4 + ((512, 2, 2),) * 2

EXTRACTOR_MODES = ("group_norm", "layer_norm")
FRAME_RULES = ("conv", "fairseq")


class ConfigBase:
    """Strict dict conversion shared by every config dataclass."""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready mapping of every field (tuples become lists)."""
        return _jsonable(dataclasses.asdict(self))  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Build from a mapping; unknown keys are an error (`model_type` is ignored)."""
        fields = {field.name for field in dataclasses.fields(cls)}  # type: ignore[arg-type]
        values = {key: value for key, value in data.items() if key != "model_type"}
        unknown = sorted(set(values) - fields)
        if unknown:
            raise ConfigError(
                f"{cls.__name__}: unknown field(s) {unknown}; valid fields are {sorted(fields)}"
            )
        if "extractor_conv_layers" in values:
            values["extractor_conv_layers"] = _conv_layers(values["extractor_conv_layers"])
        return cls(**values)

    def replace(self, **overrides: Any) -> Self:
        """A copy with some fields changed (validated like `from_dict`)."""
        return type(self).from_dict({**self.to_dict(), **overrides})


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    return value


def _conv_layers(value: Any) -> ConvLayers:
    try:
        layers = tuple((int(c), int(k), int(s)) for c, k, s in value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"extractor_conv_layers must be a list of (channels, kernel, stride); got {value!r}"
        ) from None
    return layers


def _check_types(config: Any) -> None:
    hints = typing.get_type_hints(type(config))
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        expected = hints[field.name]
        if expected is bool and not isinstance(value, bool):
            raise ConfigError(f"{field.name} must be true or false; got {value!r}")
        if expected is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise ConfigError(f"{field.name} must be an integer; got {value!r}")
        if expected is float and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ConfigError(f"{field.name} must be a number; got {value!r}")
        if expected is float and not math.isfinite(value):
            raise ConfigError(f"{field.name} must be a finite number; got {value!r}")


def _check_sizes(config: Any) -> None:
    if not config.extractor_conv_layers:
        raise ConfigError("extractor_conv_layers must have at least one layer")
    for index, layer in enumerate(config.extractor_conv_layers):
        if min(layer) < 1:
            raise ConfigError(
                f"extractor_conv_layers[{index}] = {list(layer)}: channels, kernel and stride "
                "must all be >= 1"
            )
    for name in ("embed_dim", "ffn_dim", "num_layers", "num_heads", "pos_conv_kernel"):
        if getattr(config, name) < 1:
            raise ConfigError(f"{name} must be >= 1; got {getattr(config, name)}")
    if not config.layer_norm_eps > 0:
        raise ConfigError(f"layer_norm_eps must be > 0; got {config.layer_norm_eps}")


def _check_probabilities(config: Any) -> None:
    names = ("dropout", "attention_dropout", "activation_dropout", "projection_dropout")
    for name in (*names, "layer_drop"):
        if not 0.0 <= getattr(config, name) < 1.0:
            raise ConfigError(f"{name} must be in [0, 1); got {getattr(config, name)}")


@dataclass(frozen=True, kw_only=True)
class EncoderConfig(ConfigBase):
    """The encoder: conv feature extractor -> feature projection -> positional conv -> layers."""

    extractor_mode: str = "group_norm"
    """"group_norm": GroupNorm(C, C) after conv 0 only; "layer_norm": LayerNorm over channels
    after every conv (fairseq `extractor_mode` "default" / "layer_norm"; HF `feat_extract_norm`)."""
    extractor_conv_layers: ConvLayers = BASE_CONV_LAYERS
    """(channels, kernel, stride) per conv layer (fairseq `conv_feature_layers`)."""
    extractor_conv_bias: bool = False
    """Whether the conv layers have a bias (fairseq `conv_bias`)."""
    feature_projection: bool = True
    """Whether a Linear maps conv channels to `embed_dim` (fairseq `post_extract_proj`, absent
    when channels == embed_dim in fairseq; HF and torchaudio always have one)."""
    embed_dim: int = 768
    """Transformer width D (fairseq `encoder_embed_dim`)."""
    ffn_dim: int = 3072
    """Feed-forward inner width (fairseq `encoder_ffn_embed_dim`)."""
    num_layers: int = 12
    """Number of transformer layers (fairseq `encoder_layers`)."""
    num_heads: int = 12
    """Attention heads (fairseq `encoder_attention_heads`)."""
    layer_norm_first: bool = False
    """Pre-LN layers with the encoder norm after the last layer (True) or post-LN layers with the
    encoder norm before the first layer (False) (fairseq `layer_norm_first`)."""
    qkv_bias: bool = True
    """Whether the query/key/value projections have biases (HuBERT: yes; SpidR: no)."""
    pos_conv_kernel: int = 128
    """Total kernel of the convolutional positional embedding (fairseq `conv_pos`)."""
    pos_conv_groups: int = 16
    """Groups of the positional conv (fairseq `conv_pos_groups`)."""
    pos_conv_depth: int = 1
    """1: one conv of `pos_conv_kernel` (HuBERT); d > 1: d stacked convs of kernel
    max(3, kernel // d), each followed by a non-affine LayerNorm and GELU (SpidR/DinoSR)."""
    layer_norm_eps: float = 1e-5
    """Epsilon of every LayerNorm / GroupNorm."""
    dropout: float = 0.1
    """Dropout after attention and feed-forward blocks and at the encoder input (fairseq
    `dropout`)."""
    attention_dropout: float = 0.1
    """Dropout on attention probabilities (fairseq `attention_dropout`)."""
    activation_dropout: float = 0.0
    """Dropout after the feed-forward activation (fairseq `activation_dropout`)."""
    projection_dropout: float = 0.1
    """Dropout after the feature projection (fairseq `dropout_input`)."""
    layer_drop: float = 0.05
    """Probability of skipping a layer in training (fairseq `encoder_layerdrop`)."""
    frame_rule: str = "conv"
    """Which frames of a padded row are valid: "conv" = conv-length formula floor((n-k)/s)+1
    per layer (HF, torchaudio, SpidR); "fairseq" = a frame is padding only if all its samples
    are (fairseq, s3prl; usually one frame more)."""

    def __post_init__(self) -> None:
        _check_types(self)
        if self.extractor_mode not in EXTRACTOR_MODES:
            raise ConfigError(
                f"extractor_mode must be one of {EXTRACTOR_MODES}; got {self.extractor_mode!r}"
            )
        if self.frame_rule not in FRAME_RULES:
            raise ConfigError(f"frame_rule must be one of {FRAME_RULES}; got {self.frame_rule!r}")
        _check_sizes(self)
        if self.embed_dim % self.num_heads:
            raise ConfigError(
                f"embed_dim ({self.embed_dim}) must be divisible by num_heads ({self.num_heads})"
            )
        if self.pos_conv_groups < 1 or self.embed_dim % self.pos_conv_groups:
            raise ConfigError(
                f"pos_conv_groups ({self.pos_conv_groups}) must divide embed_dim ({self.embed_dim})"
            )
        if self.pos_conv_depth < 1:
            raise ConfigError(f"pos_conv_depth must be >= 1; got {self.pos_conv_depth}")
        channels = self.extractor_conv_layers[-1][0]
        if not self.feature_projection and channels != self.embed_dim:
            raise ConfigError(
                f"feature_projection=False needs conv channels ({channels}) == embed_dim "
                f"({self.embed_dim}); set feature_projection=True"
            )
        _check_probabilities(self)

    def min_parameters(self) -> int:
        """A lower bound of the model's parameter count (weight matrices only), from the config
        alone: what the weights must hold at least."""
        conv, channels = 0, 1
        for out_channels, kernel, _ in self.extractor_conv_layers:
            conv, channels = conv + channels * out_channels * kernel, out_channels
        dim = self.embed_dim
        pos_kernel = self.pos_conv_kernel
        if self.pos_conv_depth > 1:
            pos_kernel = self.pos_conv_depth * max(3, self.pos_conv_kernel // self.pos_conv_depth)
        positional = dim * (dim // self.pos_conv_groups) * pos_kernel
        layers = self.num_layers * (4 * dim * dim + 2 * dim * self.ffn_dim)
        return conv + positional + layers

    @property
    def conv_channels(self) -> int:
        """Channels C of the conv extractor output."""
        return self.extractor_conv_layers[-1][0]

    @property
    def samples_per_frame(self) -> int:
        """Product of the conv strides (320 for the base stack: 50 frames per second)."""
        return math.prod(stride for _, _, stride in self.extractor_conv_layers)

    @property
    def receptive_field(self) -> int:
        """Samples needed for one output frame (400 for the base stack)."""
        field = 1
        for _, kernel, stride in reversed(self.extractor_conv_layers):
            field = (field - 1) * stride + kernel
        return field


@dataclass(frozen=True, kw_only=True)
class HuBERTConfig(EncoderConfig):
    """A HuBERT encoder as used for feature extraction."""

    normalize_input: bool = False
    """Whether the checkpoint's recipe standardizes each waveform (fairseq `task.normalize`, HF
    `do_normalize`). Models never do it themselves; feature commands apply it."""


@dataclass(frozen=True, kw_only=True)
class HuBERTPretrainConfig(HuBERTConfig):
    """HuBERT with its masked-prediction head (fairseq `HubertModel`, torchaudio
    `HuBERTPretrainModel`)."""

    num_classes: int = 500
    """Number of clusters K (labels are 0..K-1)."""
    num_special_labels: int = 4
    """Extra label-embedding rows before the clusters: 4 for fairseq (`<s>`, `<pad>`, `</s>`,
    `<unk>`; row 4 + k is cluster k), 0 for torchaudio. Logits have a column for every row."""
    final_dim: int = 256
    """Width of the projection compared with label embeddings (fairseq `final_dim`)."""
    logit_temp: float = 0.1
    """Cosine-similarity temperature (fairseq `logit_temp`; torchaudio hard-codes 0.1)."""
    label_rate: float | None = 50.0
    """Labels per second (fairseq `label_rate`), used to align labels to frames as fairseq does;
    None: exactly one label per frame is required (torchaudio)."""
    sample_rate: int = 16000
    """Waveform sample rate (fairseq `task.sample_rate`)."""
    mask_prob: float = 0.8
    """Share of frames starting a masked span in training (fairseq `mask_prob`): a record of
    the recipe's masking (the data side draws the masks; the model never reads it)."""
    mask_length: int = 10
    """Length of each masked span in frames (fairseq `mask_length`; a record, as `mask_prob`)."""
    feature_grad_mult: float = 0.1
    """Gradient scale of the conv extractor (fairseq `feature_grad_mult`); forward unaffected."""
    feature_penalty_weight: float = 10.0
    """Weight of the conv-feature L2 penalty (fairseq criterion `loss_weights`)."""
    pred_masked_weight: float = 1.0
    """Weight of the masked-frame cross entropy (fairseq `pred_masked_weight`)."""
    pred_nomask_weight: float = 0.0
    """Weight of the unmasked-frame cross entropy (fairseq `pred_nomask_weight`)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_classes < 1 or self.num_special_labels < 0 or self.final_dim < 1:
            raise ConfigError(
                "num_classes and final_dim must be >= 1 and num_special_labels >= 0; got "
                f"{self.num_classes}, {self.final_dim}, {self.num_special_labels}"
            )
        if self.logit_temp <= 0:
            raise ConfigError(f"logit_temp must be > 0; got {self.logit_temp}")
        if self.label_rate is not None and self.label_rate <= 0:
            raise ConfigError(f"label_rate must be > 0 or null; got {self.label_rate}")

    def min_parameters(self) -> int:
        """The encoder's bound plus the label embeddings and the final projection."""
        rows = self.num_classes + self.num_special_labels
        return super().min_parameters() + (rows + self.embed_dim) * self.final_dim


def check_weights_fit(config: EncoderConfig, state: dict[str, Tensor], origin: str) -> None:
    """Refuse a config describing more parameters than the weights hold, before building it
    (a hostile or mismatched config.json must not allocate gigabytes)."""
    needed = config.min_parameters()
    held = sum(tensor.numel() for tensor in state.values())
    if needed > held:
        raise CheckpointError(
            f"{origin}: the config describes a model of at least {needed:,} parameters, but the "
            f"weights hold only {held:,} values; the config does not belong to these weights "
            "(nothing was built). Use the config.json that came with the weights."
        )


def base(**overrides: Any) -> HuBERTConfig:
    """HuBERT Base: 12 layers, 768 wide, 12 heads, post-LN, group-norm extractor."""
    return HuBERTConfig(**overrides)


def large(**overrides: Any) -> HuBERTConfig:
    """HuBERT Large: 24 layers, 1024 wide, 16 heads, pre-LN, layer-norm extractor."""
    values: dict[str, Any] = {
        "extractor_mode": "layer_norm",
        "embed_dim": 1024,
        "ffn_dim": 4096,
        "num_layers": 24,
        "num_heads": 16,
        "layer_norm_first": True,
        "dropout": 0.0,
        "attention_dropout": 0.0,
        "projection_dropout": 0.0,
        "layer_drop": 0.0,
        "normalize_input": True,
    }
    return HuBERTConfig(**{**values, **overrides})


def xlarge(**overrides: Any) -> HuBERTConfig:
    """HuBERT X-Large: 48 layers, 1280 wide, 16 heads (head dim 80), pre-LN."""
    return large(**{"embed_dim": 1280, "ffn_dim": 5120, "num_layers": 48, **overrides})


PRESETS = {"base": base, "large": large, "xlarge": xlarge}
