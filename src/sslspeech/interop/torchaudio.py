"""torchaudio state dicts (`.pth`): `Wav2Vec2Model` (the released `hubert_fairseq_*.pth`) and
`HuBERTPretrainModel`, pos-conv weight norm as `weight_g`/`weight_v` or parametrizations.

The state dict records neither the number of heads nor pre-/post-LN: the released sizes (768,
1024, 1280 wide) get torchaudio's HuBERT values, other sizes need `num_heads=` and
`layer_norm_first=` overrides.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from sslspeech.errors import CheckpointError, ConfigError
from sslspeech.interop import CheckpointSource, LoadedCheckpoint
from sslspeech.interop.common import (
    conv_layers_from_state,
    fuse_qkv,
    layer_indices,
    pos_conv_weight,
    rename,
    tensors_only,
)

_PRETRAIN_PREFIX = "wav2vec2."
_CONV0 = "feature_extractor.conv_layers.0.conv.weight"
_POS = "encoder.transformer.pos_conv_embed.conv"
#: width -> (heads, pre-LN with a layer-norm extractor) of torchaudio's hubert_base/large/xlarge.
_KNOWN_HEADS = {768: 12, 1024: 16, 1280: 16}
_RULES = [
    (r"feature_extractor\.conv_layers\.(\d+)\.(conv|layer_norm)\.(weight|bias)",
     r"encoder.feature_extractor.conv_layers.\1.\2.\3"),
    (r"encoder\.feature_projection\.(layer_norm|projection)\.(weight|bias)",
     r"encoder.feature_projection.\1.\2"),
    (r"encoder\.transformer\.pos_conv_embed\.conv\.bias",
     "encoder.transformer.pos_conv_embed.conv.bias"),
    (r"encoder\.transformer\.layer_norm\.(weight|bias)", r"encoder.transformer.layer_norm.\1"),
    (r"encoder\.transformer\.layers\.(\d+)\.attention\.out_proj\.(weight|bias)",
     r"encoder.transformer.layers.\1.attention.proj.\2"),
    (r"encoder\.transformer\.layers\.(\d+)\.(layer_norm|final_layer_norm|"
     r"feed_forward\.intermediate_dense|feed_forward\.output_dense)\.(weight|bias)",
     r"encoder.transformer.layers.\1.\2.\3"),
    (r"aux\.(weight|bias)", None),
    (r"mask_generator\.mask_embedding", "mask_embedding"),
    (r"logit_generator\.label_embeddings", "label_embeddings"),
    (r"logit_generator\.final_proj\.(weight|bias)", r"final_proj.\1"),
]  # fmt: skip


def infer_config(
    state: dict[str, Tensor], overrides: dict[str, Any], origin: str
) -> dict[str, Any]:
    """Encoder fields from weight shapes; heads / LN placement from overrides or known sizes."""
    layer_norm_mode = "feature_extractor.conv_layers.1.layer_norm.weight" in state
    embed_dim = int(state["encoder.feature_projection.projection.weight"].shape[0])
    pos_weight = state[f"{_POS}.weight"]
    missing = [key for key in ("num_heads", "layer_norm_first") if key not in overrides]
    if missing and embed_dim not in _KNOWN_HEADS:
        raise ConfigError(
            f"{origin}: a torchaudio state dict records neither the number of heads nor pre-/"
            f"post-LN, and width {embed_dim} is not a released HuBERT size; pass "
            + ", ".join(f"{key}=..." for key in missing)
            + " (e.g. HuBERT.from_pretrained(path, num_heads=12, layer_norm_first=False))"
        )
    return {
        "extractor_mode": "layer_norm" if layer_norm_mode else "group_norm",
        "extractor_conv_layers": [
            list(layer)
            for layer in conv_layers_from_state(
                state, lambda i: f"feature_extractor.conv_layers.{i}.conv.weight", None
            )
        ],
        "extractor_conv_bias": "feature_extractor.conv_layers.0.conv.bias" in state,
        "embed_dim": embed_dim,
        "ffn_dim": int(
            state["encoder.transformer.layers.0.feed_forward.intermediate_dense.weight"].shape[0]
        ),
        "num_layers": layer_indices(state, r"encoder\.transformer\.layers\.(\d+)\.", origin),
        "num_heads": _KNOWN_HEADS.get(embed_dim, 1),
        "layer_norm_first": layer_norm_mode,
        "pos_conv_kernel": int(pos_weight.shape[2]),
        "pos_conv_groups": embed_dim // int(pos_weight.shape[1]),
        "frame_rule": "conv",
        "normalize_input": layer_norm_mode,
    }


def _strip_pretrain_prefix(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """HuBERTPretrainModel keys without their `wav2vec2.` prefix (other keys unchanged)."""
    return {key.removeprefix(_PRETRAIN_PREFIX): value for key, value in state.items()}


def native_state(state: dict[str, Tensor], origin: str) -> dict[str, Tensor]:
    """torchaudio Wav2Vec2Model / HuBERTPretrainModel parameter names -> ours."""
    state = _strip_pretrain_prefix(state)
    fused: dict[str, Tensor] = {
        "encoder.transformer.pos_conv_embed.conv.weight": pos_conv_weight(state, _POS, origin)
    }
    for index in range(layer_indices(state, r"encoder\.transformer\.layers\.(\d+)\.")):
        prefix = f"encoder.transformer.layers.{index}.attention."
        for name, value in fuse_qkv(state, prefix, ("q_proj", "k_proj", "v_proj")).items():
            fused[f"encoder.transformer.layers.{index}.attention.{name}"] = value
    return {**rename(state, _RULES, origin), **fused}


class TorchaudioReader:
    """A torchaudio Wav2Vec2Model / HuBERTPretrainModel state dict."""

    name = "torchaudio"

    def matches(self, source: CheckpointSource) -> bool:
        """A pickle that is a flat state dict with torchaudio's key names."""
        if not source.is_pickle:
            return False
        payload = source.payload
        return isinstance(payload, dict) and (
            _CONV0 in payload or _PRETRAIN_PREFIX + _CONV0 in payload
        )

    def read(self, source: CheckpointSource, overrides: dict[str, Any]) -> LoadedCheckpoint:
        """Native weights; config inferred from shapes (+ overrides)."""
        origin = str(source.path)
        state = tensors_only(source.payload, origin)
        pretrain = _PRETRAIN_PREFIX + _CONV0 in state
        state = _strip_pretrain_prefix(state)
        shapes = {**state, f"{_POS}.weight": pos_conv_weight(dict(state), _POS, origin)}
        try:
            config = infer_config(shapes, overrides, origin)
        except (KeyError, IndexError, ZeroDivisionError) as error:
            raise CheckpointError(
                f"{origin}: the state dict lacks or misshapes a weight torchaudio models have "
                f"({type(error).__name__}: {error})"
            ) from None
        native = native_state(state, origin)
        if not pretrain:
            return LoadedCheckpoint("hubert", config, native, self.name)
        if "label_embeddings" not in native or "final_proj.weight" not in native:
            raise CheckpointError(f"{origin}: HuBERTPretrainModel state dict without its heads")
        config.update(
            num_classes=int(native["label_embeddings"].shape[0]),
            num_special_labels=0,
            final_dim=int(native["final_proj.weight"].shape[0]),
            logit_temp=0.1,
            label_rate=None,
        )
        return LoadedCheckpoint("hubert_pretrain", config, native, self.name)


READERS = [TorchaudioReader()]
