"""HuggingFace transformers HuBERT directories: read (`config.json` + safetensors or
pytorch_model.bin, both pos-conv layouts) and write (`export_hf`, loadable by
`transformers.HubertModel.from_pretrained`)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sslspeech.errors import CheckpointError
from sslspeech.interop import CheckpointSource, LoadedCheckpoint
from sslspeech.interop.common import (
    fuse_qkv,
    layer_indices,
    pos_conv_weight,
    rename,
    split_weight_norm,
)
from sslspeech.utils.fileio import atomic_open
from sslspeech.utils.safetensors import load_file, save_file

log = logging.getLogger(__name__)

_NORMS = {"group": "group_norm", "layer": "layer_norm"}
_RULES = [
    (r"feature_extractor\.conv_layers\.(\d+)\.(conv|layer_norm)\.(weight|bias)",
     r"encoder.feature_extractor.conv_layers.\1.\2.\3"),
    (r"feature_projection\.(layer_norm|projection)\.(weight|bias)",
     r"encoder.feature_projection.\1.\2"),
    (r"encoder\.pos_conv_embed\.conv\.bias", "encoder.transformer.pos_conv_embed.conv.bias"),
    (r"encoder\.layer_norm\.(weight|bias)", r"encoder.transformer.layer_norm.\1"),
    (r"encoder\.layers\.(\d+)\.attention\.out_proj\.(weight|bias)",
     r"encoder.transformer.layers.\1.attention.proj.\2"),
    (r"encoder\.layers\.(\d+)\.(layer_norm|final_layer_norm|feed_forward\.intermediate_dense|"
     r"feed_forward\.output_dense)\.(weight|bias)", r"encoder.transformer.layers.\1.\2.\3"),
    (r"masked_spec_embed", None),
]  # fmt: skip


#: Our config field -> (HubertConfig key, default or _REQUIRED), values taken as they are.
_REQUIRED = object()
_FIELDS: dict[str, tuple[str, Any]] = {
    "embed_dim": ("hidden_size", _REQUIRED),
    "ffn_dim": ("intermediate_size", _REQUIRED),
    "num_layers": ("num_hidden_layers", _REQUIRED),
    "num_heads": ("num_attention_heads", _REQUIRED),
    "pos_conv_kernel": ("num_conv_pos_embeddings", _REQUIRED),
    "pos_conv_groups": ("num_conv_pos_embedding_groups", _REQUIRED),
    "layer_norm_eps": ("layer_norm_eps", 1e-5),
    "dropout": ("hidden_dropout", 0.1),
    "attention_dropout": ("attention_dropout", 0.1),
    "activation_dropout": ("activation_dropout", 0.1),
    "projection_dropout": ("feat_proj_dropout", 0.0),
    "layer_drop": ("layerdrop", 0.1),
}


CONFIG_KEYS = {
    **{field: f"HubertConfig key {key!r}" for field, (key, _) in _FIELDS.items()},
    "extractor_conv_layers": "HubertConfig keys conv_dim/conv_kernel/conv_stride",
}
"""Our config fields -> the HubertConfig keys they come from (named in config errors)."""


def _conv_layers(hf: dict[str, Any], origin: str) -> list[list[Any]]:
    """(channels, kernel, stride) per layer from conv_dim / conv_kernel / conv_stride."""
    lists: dict[str, Any] = {key: hf.get(key) for key in ("conv_dim", "conv_kernel", "conv_stride")}
    bad = [key for key, value in lists.items() if not isinstance(value, list) or not value]
    if bad:
        raise CheckpointError(f"{origin}: {bad} must be non-empty lists of integers")
    lengths = {key: len(value) for key, value in lists.items()}
    expected = hf.get("num_feat_extract_layers", lengths["conv_dim"])
    if set(lengths.values()) != {expected}:
        raise CheckpointError(
            f"{origin}: conv_dim, conv_kernel and conv_stride must each have "
            f"num_feat_extract_layers ({expected}) entries; got {lengths}"
        )
    return [list(layer) for layer in zip(*lists.values(), strict=True)]


def config_from_hf(
    hf: dict[str, Any], preprocessor: dict[str, Any] | None, origin: str
) -> dict[str, Any]:
    """Our HuBERT config fields from a transformers HubertConfig dict, validated (ranges,
    finite numbers, consistent conv lists) before any tensor is made."""
    unsupported = {
        "hidden_act": hf.get("hidden_act", "gelu") != "gelu",
        "feat_extract_activation": hf.get("feat_extract_activation", "gelu") != "gelu",
        "conv_pos_batch_norm": bool(hf.get("conv_pos_batch_norm", False)),
        "feat_proj_layer_norm": not hf.get("feat_proj_layer_norm", True),
    }
    bad = [name for name, flag in unsupported.items() if flag]
    if bad:
        raise CheckpointError(f"{origin}: unsupported HubertConfig values: {bad}")
    norm = hf.get("feat_extract_norm", "group")
    if norm not in _NORMS:
        raise CheckpointError(
            f"{origin}: feat_extract_norm must be 'group' or 'layer'; got {norm!r}"
        )
    missing = [key for key, default in _FIELDS.values() if default is _REQUIRED and key not in hf]
    if missing:
        raise CheckpointError(f"{origin}: HubertConfig keys {missing} are missing")
    if preprocessor is not None and "do_normalize" in preprocessor:
        normalize = bool(preprocessor["do_normalize"])
    else:  # HF's convention: layer-norm extractors were trained on standardized audio
        normalize = norm == "layer"
    config = {
        "extractor_mode": _NORMS[norm],
        "extractor_conv_layers": _conv_layers(hf, origin),
        "extractor_conv_bias": bool(hf.get("conv_bias", False)),
        "layer_norm_first": bool(hf.get("do_stable_layer_norm", False)),
        "frame_rule": "conv",
        "normalize_input": normalize,
        **{field: hf.get(key, default) for field, (key, default) in _FIELDS.items()},
    }
    return config


def state_from_hf(state: dict[str, Tensor], origin: str) -> dict[str, Tensor]:
    """Native HuBERT state dict from HubertModel weights (prefix `hubert.` of task heads ok)."""
    if any(key.startswith("hubert.") for key in state):
        dropped = sorted(key for key in state if not key.startswith("hubert."))
        if dropped:
            log.info("%s: ignoring task-head weights %s", origin, dropped)
        state = {key[7:]: value for key, value in state.items() if key.startswith("hubert.")}
    state = dict(state)
    weight = pos_conv_weight(state, "encoder.pos_conv_embed.conv", origin)
    fused: dict[str, Tensor] = {"encoder.transformer.pos_conv_embed.conv.weight": weight}
    for index in range(layer_indices(state, r"encoder\.layers\.(\d+)\.", origin)):
        prefix = f"encoder.layers.{index}.attention."
        for name, value in fuse_qkv(state, prefix, ("q_proj", "k_proj", "v_proj")).items():
            fused[f"encoder.transformer.layers.{index}.attention.{name}"] = value
    return {**rename(state, _RULES, origin), **fused}


def _shard_names(index: Path) -> list[str]:
    """The shard files a `model.safetensors.index.json` names (plain names in its folder)."""
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        shards = sorted(set(weight_map.values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise CheckpointError(
            f"{index}: expected a JSON object with a 'weight_map' of name -> shard file ({error})"
        ) from None
    bad = [name for name in shards if not isinstance(name, str) or Path(name).name != name]
    if bad:
        raise CheckpointError(f"{index}: shard names must be file names in its folder; got {bad}")
    return shards


def _load_weights(directory: Path) -> dict[str, Tensor]:
    if (directory / "model.safetensors").is_file():
        return load_file(directory / "model.safetensors")
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        shards = _shard_names(index)
        state: dict[str, Tensor] = {}
        for shard in shards:
            state.update(load_file(directory / shard))
        return state
    if (directory / "pytorch_model.bin").is_file():
        from sslspeech.interop.safe_pickle import load

        payload = load(directory / "pytorch_model.bin")
        if not isinstance(payload, dict):
            raise CheckpointError(f"{directory}/pytorch_model.bin: expected a state dict")
        return payload
    raise CheckpointError(
        f"{directory}: HF config.json found but no model.safetensors or pytorch_model.bin"
    )


class HFReader:
    """A transformers HuBERT model directory."""

    name = "hf"

    def matches(self, source: CheckpointSource) -> bool:
        """A directory whose config.json is a transformers HubertConfig."""
        if not source.is_dir:
            return False
        config = source.json("config.json")
        return config is not None and config.get("model_type") == "hubert" and "conv_dim" in config

    def read(self, source: CheckpointSource, overrides: dict[str, Any]) -> LoadedCheckpoint:
        """Config from config.json (+ preprocessor_config.json), weights from the directory."""
        hf = source.json("config.json") or {}
        origin = str(source.path / "config.json")
        config = config_from_hf(hf, source.json("preprocessor_config.json"), origin)
        state = state_from_hf(_load_weights(source.path), str(source.path))
        return LoadedCheckpoint(
            "hubert", config, state, self.name, origin=origin, config_keys=CONFIG_KEYS
        )


READERS = [HFReader()]


def hf_config(config: Any) -> dict[str, Any]:
    """A transformers HubertConfig dict for our HuBERT config."""
    channels, kernels, strides = zip(*config.extractor_conv_layers, strict=True)
    return {
        "architectures": ["HubertModel"],
        "model_type": "hubert",
        "conv_dim": list(channels),
        "conv_kernel": list(kernels),
        "conv_stride": list(strides),
        "num_feat_extract_layers": len(channels),
        "conv_bias": config.extractor_conv_bias,
        "feat_extract_norm": "group" if config.extractor_mode == "group_norm" else "layer",
        "feat_extract_activation": "gelu",
        "feat_proj_layer_norm": True,
        "feat_proj_dropout": config.projection_dropout,
        "hidden_size": config.embed_dim,
        "intermediate_size": config.ffn_dim,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "hidden_act": "gelu",
        "do_stable_layer_norm": config.layer_norm_first,
        "num_conv_pos_embeddings": config.pos_conv_kernel,
        "num_conv_pos_embedding_groups": config.pos_conv_groups,
        "conv_pos_batch_norm": False,
        "layer_norm_eps": config.layer_norm_eps,
        "hidden_dropout": config.dropout,
        "attention_dropout": config.attention_dropout,
        "activation_dropout": config.activation_dropout,
        "layerdrop": config.layer_drop,
        "mask_time_prob": 0.0,
        "mask_feature_prob": 0.0,
        "apply_spec_augment": False,
    }


def hf_state(config: Any, state: dict[str, Tensor]) -> dict[str, Tensor]:
    """HubertModel weights (legacy `weight_g`/`weight_v` pos-conv keys) from a native state."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if not key.startswith("encoder."):
            continue
        key = key[len("encoder.") :]
        if key.startswith(("feature_extractor.", "feature_projection.")):
            out[key] = value
        elif key == "transformer.pos_conv_embed.conv.weight":
            g, v = split_weight_norm(value)
            out["encoder.pos_conv_embed.conv.weight_g"] = g
            out["encoder.pos_conv_embed.conv.weight_v"] = v
        elif ".attention.qkv." in key:
            prefix, kind = key.replace("transformer.", "encoder.").split(".attention.qkv.")
            for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3), strict=True):
                out[f"{prefix}.attention.{name}.{kind}"] = part.clone()
        elif key.startswith("transformer."):
            out[
                "encoder."
                + key[len("transformer.") :].replace("attention.proj.", "attention.out_proj.")
            ] = value
        else:
            raise CheckpointError(f"cannot export parameter {key!r} to HF")
    if not config.feature_projection:
        dim = config.embed_dim
        out["feature_projection.projection.weight"] = torch.eye(dim)
        out["feature_projection.projection.bias"] = torch.zeros(dim)
    if not config.qkv_bias:
        for index in range(config.num_layers):
            for name in ("q_proj", "k_proj", "v_proj"):
                out[f"encoder.layers.{index}.attention.{name}.bias"] = torch.zeros(config.embed_dim)
    return out


def export_hf(model: Any, directory: str | os.PathLike[str]) -> Path:
    """Write a HuBERT (or the encoder of a HuBERTPretrain) as a transformers HubertModel dir."""
    config = model.config
    if config.pos_conv_depth != 1:
        raise CheckpointError("only HuBERT encoders (single positional conv) export to HF")
    state = {key: value.detach().float().cpu() for key, value in model.state_dict().items()}
    directory = write_hf_directory(directory, hf_state(config, state), hf_config(config), config)
    if config.frame_rule != "conv":
        log.warning(
            "%s: transformers counts valid frames of padded rows by the conv formula; this "
            "checkpoint's rule (%s) gives one frame more on some rows",
            directory,
            config.frame_rule,
        )
    return directory


def write_hf_directory(
    directory: str | os.PathLike[str],
    weights: dict[str, Tensor],
    hf_config_dict: dict[str, Any],
    config: Any,
) -> Path:
    """model.safetensors, config.json and the Wav2Vec2FeatureExtractor preprocessor_config.json
    (waveform standardization as `config.normalize_input`) of a transformers model directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file(weights, directory / "model.safetensors", {"format": "pt"})
    preprocessor = {
        "feature_extractor_type": "Wav2Vec2FeatureExtractor",
        "feature_size": 1,
        "sampling_rate": 16000,
        "padding_side": "right",
        "padding_value": 0.0,
        "do_normalize": config.normalize_input,
        "return_attention_mask": config.extractor_mode == "layer_norm",
    }
    for name, data in (
        ("config.json", hf_config_dict),
        ("preprocessor_config.json", preprocessor),
    ):
        with atomic_open(directory / name, "w") as handle:
            json.dump(data, handle, indent=2)
            handle.write("\n")
    return directory
