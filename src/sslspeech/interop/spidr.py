"""SpidR / DinoSR checkpoints: the `spidr` package's native format (`{"model": state_dict}`,
usually `checkpoint.pt` or `step_N.pt` with the model `config.json` next to it) and the
original DinoSR fairseq `.ckpt` (`_ema`, `_codebook{i}`, `_codebook_cnts{i}` entries).

Both are turned into our SpidR/DinoSR state dict: the student under `encoder.` (student
transformer at `encoder.transformer.`), `teacher.`, stacked `heads.weight`/`heads.bias`
[K, V, D]/[K, V] and stacked codebook buffers `codebooks.sums`/`codebooks.counts`.
"""

from __future__ import annotations

import logging
import re
import weakref
from typing import Any

import torch
from torch import Tensor

from sslspeech.errors import CheckpointError
from sslspeech.interop import CheckpointSource, LoadedCheckpoint
from sslspeech.interop.common import fuse_qkv, layer_indices, rename, tensors_only

log = logging.getLogger(__name__)

#: `spidr` config field -> ours (fields absent here keep their name).
CONFIG_NAMES = {
    "extractor_conv_layer_config": "extractor_conv_layers",
    "encoder_embed_dim": "embed_dim",
    "encoder_projection_dropout": "projection_dropout",
    "encoder_pos_conv_kernel": "pos_conv_kernel",
    "encoder_pos_conv_groups": "pos_conv_groups",
    "encoder_pos_conv_depth": "pos_conv_depth",
    "encoder_num_layers": "num_layers",
    "encoder_num_heads": "num_heads",
    "encoder_attention_dropout": "attention_dropout",
    "encoder_ff_interm_features": "ffn_dim",
    "encoder_ff_interm_dropout": "activation_dropout",
    "encoder_dropout": "dropout",
    "encoder_layer_norm_first": "layer_norm_first",
    "encoder_layer_drop": "layer_drop",
    "encoder_qkv_bias": "qkv_bias",
}
_SAME_NAMES = {
    "extractor_mode",
    "extractor_conv_bias",
    "codebook_size",
    "codebook_decay",
    "num_codebooks",
    "ema_start_decay",
    "ema_final_decay",
    "ema_final_step",
    "ema_exclude_layers",
    "freeze_step",
    "ema_timescale",
    "ema_threshold",
}
_SPIDR_ONLY = ("ema_timescale", "ema_threshold")

_NATIVE_RULES = [
    (r"feature_extractor\.(.+)", r"encoder.feature_extractor.\1"),
    (r"feature_projection\.(.+)", r"encoder.feature_projection.\1"),
    (r"student\.(.+)", r"encoder.transformer.\1"),
    (r"teacher\.(.+)", r"teacher.\1"),
    (r"mask_embedding", "mask_embedding"),
    (r"current_step", "current_step"),
]

_FAIRSEQ_ENCODER_RULES = [
    (r"pos_conv\.(\d+)\.0\.(weight|bias)", r"pos_conv_embed.convs.\1.\2"),
    (r"layer_norm\.(weight|bias)", r"layer_norm.\1"),
    (r"layers\.(\d+)\.self_attn\.out_proj\.(weight|bias)", r"layers.\1.attention.proj.\2"),
    (r"layers\.(\d+)\.self_attn_layer_norm\.(weight|bias)", r"layers.\1.layer_norm.\2"),
    (r"layers\.(\d+)\.fc1\.(weight|bias)", r"layers.\1.feed_forward.intermediate_dense.\2"),
    (r"layers\.(\d+)\.fc2\.(weight|bias)", r"layers.\1.feed_forward.output_dense.\2"),
    (r"layers\.(\d+)\.final_layer_norm\.(weight|bias)", r"layers.\1.final_layer_norm.\2"),
]
_FAIRSEQ_RULES = [
    (r"mask_emb", "mask_embedding"),
    (r"feature_extractor\.conv_layers\.(\d+)\.0\.(weight|bias)",
     r"encoder.feature_extractor.conv_layers.\1.conv.\2"),
    (r"feature_extractor\.conv_layers\.(\d+)\.2(?:\.1)?\.(weight|bias)",
     r"encoder.feature_extractor.conv_layers.\1.layer_norm.\2"),
    (r"post_extract_proj\.(weight|bias)", r"encoder.feature_projection.projection.\1"),
    (r"layer_norm\.(weight|bias)", r"encoder.feature_projection.layer_norm.\1"),
    *[("encoder\\." + pattern, "encoder.transformer." + target)
      for pattern, target in _FAIRSEQ_ENCODER_RULES],
    (r"_pre_encoder_.*", None),  # frozen extractor copies (freeze_pre_enc_modules=False)
]  # fmt: skip

_FAIRSEQ_DEFAULTS = {
    "codebook_size": 256,
    "codebook_init_decay": 0.9,
    "average_top_k_layers": 8,
    "ema_decay": 0.999,
    "ema_end_decay": 0.9999,
    "freeze_teacher_step": 200001,
}

# ---------------------------------------------------------------------------- shared helpers


def config_from_spidr(raw: dict[str, Any], origin: str) -> dict[str, Any]:
    """Our config fields from a `spidr` DinoSRConfig/SpidRConfig dict (unknown names: error)."""
    config: dict[str, Any] = {"feature_projection": True, "frame_rule": "conv"}
    for key, value in raw.items():
        if key in CONFIG_NAMES:
            config[CONFIG_NAMES[key]] = value
        elif key in _SAME_NAMES:
            config[key] = value
        else:
            raise CheckpointError(
                f"{origin}: unknown SpidR/DinoSR config field {key!r}; expected the fields of the "
                "spidr package's DinoSRConfig/SpidRConfig"
            )
    return config


def stack_heads_and_codebooks(state: dict[str, Tensor], origin: str) -> dict[str, Tensor]:
    """Pop `heads.{i}.0.*` and `codebooks.{i}.{codebook,counts}` and return our stacked
    `heads.weight/bias` and `codebooks.sums/counts`."""
    count = layer_indices(state, r"codebooks\.(\d+)\.", origin)
    if count == 0:
        raise CheckpointError(f"{origin}: no codebooks ('codebooks.0.codebook') in the state dict")
    names = {
        "heads.weight": "heads.{}.0.weight",
        "heads.bias": "heads.{}.0.bias",
        "codebooks.sums": "codebooks.{}.codebook",
        "codebooks.counts": "codebooks.{}.counts",
    }
    out: dict[str, Tensor] = {}
    for target, pattern in names.items():
        keys = [pattern.format(index) for index in range(count)]
        missing = [key for key in keys if key not in state]
        if missing:
            raise CheckpointError(f"{origin}: missing {missing} for {count} codebooks")
        out[target] = torch.stack([state.pop(key) for key in keys])
    return out


def native_state_from_spidr(state: dict[str, Tensor], origin: str) -> dict[str, Tensor]:
    """`spidr` package state-dict names -> ours."""
    state = {key.removeprefix("module."): value for key, value in state.items()}
    stacked = stack_heads_and_codebooks(state, origin)
    return {**rename(state, _NATIVE_RULES, origin), **stacked}


def infer_config(state: dict[str, Tensor]) -> dict[str, Any]:
    """Config fields readable from the weights alone (spidr names); the rest keep the base
    defaults (12 heads for a 768-wide model: heads = width / 64)."""
    convs = []
    index = 0
    while f"feature_extractor.conv_layers.{index}.conv.weight" in state:
        weight = state[f"feature_extractor.conv_layers.{index}.conv.weight"]
        convs.append([int(weight.shape[0]), int(weight.shape[2]), 5 if index == 0 else 2])
        index += 1
    embed_dim = int(state["mask_embedding"].shape[0])
    pos = state["student.pos_conv_embed.convs.0.weight"]
    depth = layer_indices(state, r"student\.pos_conv_embed\.convs\.(\d+)\.")
    extractor_norm = "feature_extractor.conv_layers.1.layer_norm.weight" in state
    return {
        "extractor_mode": "layer_norm" if extractor_norm else "group_norm",
        "extractor_conv_bias": "feature_extractor.conv_layers.0.conv.bias" in state,
        "extractor_conv_layer_config": convs,
        "encoder_embed_dim": embed_dim,
        "encoder_pos_conv_kernel": int(pos.shape[2]) * depth,
        "encoder_pos_conv_groups": embed_dim // int(pos.shape[1]),
        "encoder_pos_conv_depth": depth,
        "encoder_num_layers": layer_indices(state, r"student\.layers\.(\d+)\."),
        "encoder_num_heads": max(1, embed_dim // 64),
        "encoder_ff_interm_features": int(
            state["student.layers.0.feed_forward.intermediate_dense.weight"].shape[0]
        ),
        "encoder_qkv_bias": "student.layers.0.attention.qkv.bias" in state,
        "codebook_size": int(state["codebooks.0.codebook"].shape[0]),
        "num_codebooks": layer_indices(state, r"codebooks\.(\d+)\."),
    }


_FILE_SOURCES: weakref.WeakKeyDictionary[CheckpointSource, CheckpointSource | None] = (
    weakref.WeakKeyDictionary()
)


def checkpoint_file(source: CheckpointSource) -> CheckpointSource | None:
    """The pickle a source stands for: the file itself, or the one checkpoint of a directory
    (`checkpoint.pt`, else a single `*.pt`/`*.ckpt`)."""
    if not source.is_dir:
        return source if source.is_pickle else None
    if source in _FILE_SOURCES:
        return _FILE_SOURCES[source]
    candidates = [source.path / "checkpoint.pt"]
    if not candidates[0].is_file():
        candidates = sorted(p for p in source.path.iterdir() if p.suffix in (".pt", ".ckpt"))
    found = CheckpointSource(candidates[0]) if len(candidates) == 1 else None
    if found is not None and not found.is_pickle:
        found = None
    _FILE_SOURCES[source] = found
    return found


def _model_dict(payload: Any) -> dict[str, Any] | None:
    if isinstance(payload, dict) and isinstance(payload.get("model"), dict):
        return payload["model"]
    return None


# ---------------------------------------------------------------------------- spidr native


class SpidRNativeReader:
    """The `spidr` package's checkpoints: `{"model": state_dict, ...}` + `config.json`."""

    name = "spidr"

    def matches(self, source: CheckpointSource) -> bool:
        """A pickle whose `model` has student, teacher and codebook entries."""
        file = checkpoint_file(source)
        model = _model_dict(file.payload) if file is not None else None
        if model is None:
            return False
        keys = [key.removeprefix("module.") for key in model]
        return "codebooks.0.codebook" in keys and any(k.startswith("teacher.") for k in keys)

    def read(self, source: CheckpointSource, overrides: dict[str, Any]) -> LoadedCheckpoint:
        """Config from config.json next to the weights (flat or under "model"; model type from
        "run.model_type" or the SpidR-only fields); without one, inferred from the weights."""
        file = checkpoint_file(source)
        assert file is not None  # matches() found it
        origin = str(file.path)
        raw_state = tensors_only(_model_dict(file.payload), origin)
        state = {key.removeprefix("module."): value for key, value in raw_state.items()}
        raw = source.json("config.json")
        if raw is None:
            log.warning(
                "%s: no config.json next to it; config inferred from the weights (num_heads = "
                "width / 64, SpidR schedule): pass overrides or load with DinoSR if needed",
                origin,
            )
            try:
                inferred = infer_config(state)
            except (KeyError, IndexError, ZeroDivisionError) as error:
                raise CheckpointError(
                    f"{origin}: the state dict lacks or misshapes a SpidR weight "
                    f"({type(error).__name__}: {error})"
                ) from None
            config = config_from_spidr(inferred, origin)
            state = native_state_from_spidr(state, origin)
            return LoadedCheckpoint("spidr", config, state, WEIGHTS_ONLY, also_fits=("dinosr",))
        run = raw["run"] if isinstance(raw.get("run"), dict) else {}
        model_raw = raw["model"] if isinstance(raw.get("model"), dict) else raw
        model_type = run.get("model_type") or (
            "spidr" if any(key in model_raw for key in _SPIDR_ONLY) else "dinosr"
        )
        if model_type not in ("spidr", "dinosr"):
            raise CheckpointError(f"{origin}: model_type {model_type!r} is not spidr or dinosr")
        config = config_from_spidr(model_raw, str(source.directory / "config.json"))
        return LoadedCheckpoint(
            model_type, config, native_state_from_spidr(state, origin), self.name
        )


#: `LoadedCheckpoint.format` of a SpidR-layout checkpoint read without config.json (it also
#: fits DinoSR: the layouts are identical).
WEIGHTS_ONLY = "spidr (weights only)"


# ---------------------------------------------------------------------------- DinoSR fairseq


def _resolve(value: Any, root: dict[str, Any]) -> Any:
    """An omegaconf interpolation "${a.b}" looked up in the checkpoint's cfg."""
    match = re.fullmatch(r"\$\{([\w.]+)\}", value) if isinstance(value, str) else None
    if match is None:
        return value
    node: Any = root
    for part in match.group(1).split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def config_from_fairseq(cfg: dict[str, Any], state: dict[str, Tensor]) -> dict[str, Any]:
    """Our DinoSR config fields from a fairseq DinoSR cfg (fairseq defaults where absent)."""
    from sslspeech.interop.fairseq import encoder_config

    model = {k: _resolve(v, cfg) for k, v in dict(cfg.get("model") or {}).items()}
    model = {**_FAIRSEQ_DEFAULTS, **model}
    config = encoder_config(model, dict(cfg.get("task") or {}), state)
    config.update(
        frame_rule="conv",
        qkv_bias=True,
        pos_conv_depth=int(model.get("pos_conv_depth", 1)),
        codebook_size=int(model["codebook_size"]),
        num_codebooks=int(model["average_top_k_layers"]),
        ema_start_decay=float(model["ema_decay"]),
        ema_final_decay=float(model["ema_end_decay"]),
        freeze_step=_freeze_step(int(model["freeze_teacher_step"])),
        ema_exclude_layers=["pos_conv_embed"] if model.get("ema_layers_only", True) else [],
        mask_prob=float(model.get("mask_prob", 0.8)),
        mask_length=int(model.get("mask_length", 10)),
    )
    start = float(model["codebook_init_decay"])
    end = float(model.get("codebook_end_decay", start))
    if start != end:
        log.warning("fairseq codebook decay anneals %s -> %s; using the final value", start, end)
    config["codebook_decay"] = end
    final_step = model.get("ema_anneal_end_step")
    if isinstance(final_step, int | float):
        config["ema_final_step"] = int(final_step)
    return config


def _freeze_step(step: int) -> int:
    """fairseq's -1 (never freeze the teacher) as a step no run reaches."""
    return NEVER if step < 0 else step


#: A step no training run reaches (fairseq `freeze_teacher_step=-1`).
NEVER = 2**62


def native_state_from_fairseq(model: dict[str, Any], origin: str) -> dict[str, Tensor]:
    """DinoSR fairseq tensor names -> ours (q/k/v fused; `_ema` -> teacher; codebooks and
    heads stacked)."""
    model = dict(model)
    ema = model.pop("_ema", None)
    if not isinstance(ema, dict):
        raise CheckpointError(f"{origin}: no teacher ('_ema') in the DinoSR checkpoint")
    spidr_layout: dict[str, Tensor] = {}
    for key in [k for k in model if re.fullmatch(r"_codebook(_cnts)?\d+|heads\.\d+\.\w+", k)]:
        value = model.pop(key)
        match = re.fullmatch(r"_codebook_cnts(\d+)", key)
        if match:
            spidr_layout[f"codebooks.{match.group(1)}.counts"] = value
        elif match := re.fullmatch(r"_codebook(\d+)", key):
            spidr_layout[f"codebooks.{match.group(1)}.codebook"] = value
        else:
            index, kind = key.split(".")[1:]
            spidr_layout[f"heads.{index}.0.{kind}"] = value
    state = tensors_only(model, origin)
    teacher = tensors_only(ema, f"{origin} (_ema)")
    out = stack_heads_and_codebooks(spidr_layout, origin)
    out.update(_fused(state, "encoder.layers", "encoder.transformer.layers"))
    out.update(_fused(teacher, "layers", "teacher.layers"))
    out.update(rename(state, _FAIRSEQ_RULES, origin))
    teacher_rules = [(pattern, "teacher." + target) for pattern, target in _FAIRSEQ_ENCODER_RULES]
    out.update(rename(teacher, teacher_rules, f"{origin} (_ema)"))
    return out


def _fused(state: dict[str, Tensor], prefix: str, target: str) -> dict[str, Tensor]:
    out = {}
    for index in range(layer_indices(state, re.escape(prefix) + r"\.(\d+)\.")):
        names = ("q_proj", "k_proj", "v_proj")
        for name, value in fuse_qkv(state, f"{prefix}.{index}.self_attn.", names).items():
            out[f"{target}.{index}.attention.{name}"] = value
    return out


def fairseq_step(payload: dict[str, Any]) -> int:
    """The training step of a fairseq checkpoint: last_optimizer_state.state[0].step (0 when
    absent, as the reference)."""
    try:
        step = payload["last_optimizer_state"]["state"][0]["step"]
    except (KeyError, TypeError, IndexError):
        return 0
    return int(step.item() if isinstance(step, Tensor) else step)


class DinoSRFairseqReader:
    """The original DinoSR fairseq checkpoint (`dinosr.ckpt`)."""

    name = "dinosr_fairseq"

    def matches(self, source: CheckpointSource) -> bool:
        """A pickle whose `model` has `_ema` and `_codebook0` entries."""
        file = checkpoint_file(source)
        model = _model_dict(file.payload) if file is not None else None
        return model is not None and "_ema" in model and "_codebook0" in model

    def read(self, source: CheckpointSource, overrides: dict[str, Any]) -> LoadedCheckpoint:
        """Config from cfg.model / cfg.task (or legacy `args`); step from the optimizer state."""
        file = checkpoint_file(source)
        assert file is not None  # matches() found it
        payload = file.payload
        origin = str(file.path)
        cfg = payload.get("cfg") or {}
        if not cfg and isinstance(payload.get("args"), dict):
            cfg = {"model": payload["args"], "task": payload["args"]}
        name = (cfg.get("model") or {}).get("_name", "dinosr")
        if name != "dinosr":
            raise CheckpointError(f"{origin}: fairseq model {name!r} is not DinoSR")
        state = native_state_from_fairseq(payload["model"], origin)
        state["current_step"] = torch.tensor([fairseq_step(payload)])
        try:
            config = config_from_fairseq(cfg, payload["model"])
        except (TypeError, ValueError) as error:  # int("abc"), float(None) on a config value
            raise CheckpointError(
                f"{origin}: a model/task config value is not a number ({error})"
            ) from None
        return LoadedCheckpoint("dinosr", config, state, self.name)


READERS = [DinoSRFairseqReader(), SpidRNativeReader()]
