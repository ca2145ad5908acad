"""fairseq HuBERT checkpoints (`.pt`, cfg as DictConfig or dict, or legacy `args`; pretraining
and CTC fine-tuned) and s3prl's converted `.pt` (`task_cfg`, `model_cfg`, `model_weight`,
`dictionaries_symbols`). Both use fairseq parameter names."""

from __future__ import annotations

import ast
import logging
from typing import Any

from torch import Tensor

from sslspeech.errors import CheckpointError
from sslspeech.interop import CheckpointSource, LoadedCheckpoint
from sslspeech.interop.common import fuse_qkv, layer_indices, pos_conv_weight, rename, tensors_only

log = logging.getLogger(__name__)

_EXTRACTOR_MODES = {"default": "group_norm", "layer_norm": "layer_norm"}
#: More conv layers than any real extractor has (wav2vec 2.0 / HuBERT: 7).
_MAX_CONV_LAYERS = 64
_CTC_PREFIX = "w2v_encoder.w2v_model."
_RULES = [
    (r"feature_extractor\.conv_layers\.(\d+)\.0\.(weight|bias)",
     r"encoder.feature_extractor.conv_layers.\1.conv.\2"),
    (r"feature_extractor\.conv_layers\.(\d+)\.2(?:\.1)?\.(weight|bias)",
     r"encoder.feature_extractor.conv_layers.\1.layer_norm.\2"),
    (r"layer_norm\.(weight|bias)", r"encoder.feature_projection.layer_norm.\1"),
    (r"post_extract_proj\.(weight|bias)", r"encoder.feature_projection.projection.\1"),
    (r"encoder\.pos_conv\.0\.bias", "encoder.transformer.pos_conv_embed.conv.bias"),
    (r"encoder\.layer_norm\.(weight|bias)", r"encoder.transformer.layer_norm.\1"),
    (r"encoder\.layers\.(\d+)\.self_attn\.out_proj\.(weight|bias)",
     r"encoder.transformer.layers.\1.attention.proj.\2"),
    (r"encoder\.layers\.(\d+)\.self_attn_layer_norm\.(weight|bias)",
     r"encoder.transformer.layers.\1.layer_norm.\2"),
    (r"encoder\.layers\.(\d+)\.fc1\.(weight|bias)",
     r"encoder.transformer.layers.\1.feed_forward.intermediate_dense.\2"),
    (r"encoder\.layers\.(\d+)\.fc2\.(weight|bias)",
     r"encoder.transformer.layers.\1.feed_forward.output_dense.\2"),
    (r"encoder\.layers\.(\d+)\.final_layer_norm\.(weight|bias)",
     r"encoder.transformer.layers.\1.final_layer_norm.\2"),
    (r"mask_emb", "mask_embedding"),
    (r"final_proj\.(weight|bias)", r"final_proj.\1"),
    (r"label_embs_concat", "label_embeddings"),
]  # fmt: skip


def parse_conv_layers(text: Any) -> list[list[int]]:
    """fairseq's `conv_feature_layers` expression ("[(512,10,5)] + [(512,3,2)] * 4 ...")
    evaluated without eval(): only literals, lists, tuples, + and *."""
    if isinstance(text, list | tuple):
        return [list(map(int, layer)) for layer in text]

    def value(node: ast.AST) -> Any:
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.List | ast.Tuple):
            items = [value(item) for item in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Mult):
            left, right = value(node.left), value(node.right)
            if isinstance(node.op, ast.Add):
                return left + right
            items, times = (left, right) if isinstance(right, int) else (right, left)
            if not isinstance(times, int) or len(items) * times > _MAX_CONV_LAYERS:
                raise CheckpointError(
                    f"conv_feature_layers: {text!r} repeats beyond {_MAX_CONV_LAYERS} layers"
                )
            return items * times
        raise CheckpointError(f"conv_feature_layers: unsupported expression {text!r}")

    try:
        tree = ast.parse(str(text), mode="eval")
    except SyntaxError:
        raise CheckpointError(f"conv_feature_layers: not an expression: {text!r}") from None
    return [list(map(int, layer)) for layer in value(tree.body)]


def encoder_config(
    model: dict[str, Any], task: dict[str, Any], state: dict[str, Tensor]
) -> dict[str, Any]:
    """Our encoder/HuBERT fields from fairseq model and task configs (fairseq defaults)."""
    if model.get("activation_fn", "gelu") != "gelu":
        raise CheckpointError(f"activation_fn {model['activation_fn']!r} is not supported")
    mode = model.get("extractor_mode", "default")
    if mode not in _EXTRACTOR_MODES:
        raise CheckpointError(f"extractor_mode must be 'default' or 'layer_norm'; got {mode!r}")
    layers = parse_conv_layers(
        model.get("conv_feature_layers", "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2")
    )
    return {
        "extractor_mode": _EXTRACTOR_MODES[mode],
        "extractor_conv_layers": layers,
        "extractor_conv_bias": bool(model.get("conv_bias", False)),
        "feature_projection": "post_extract_proj.weight" in state,
        "embed_dim": int(model.get("encoder_embed_dim", 768)),
        "ffn_dim": int(model.get("encoder_ffn_embed_dim", 3072)),
        "num_layers": int(model.get("encoder_layers", 12)),
        "num_heads": int(model.get("encoder_attention_heads", 12)),
        "layer_norm_first": bool(model.get("layer_norm_first", False)),
        "pos_conv_kernel": int(model.get("conv_pos", 128)),
        "pos_conv_groups": int(model.get("conv_pos_groups", 16)),
        "dropout": float(model.get("dropout", 0.1)),
        "attention_dropout": float(model.get("attention_dropout", 0.1)),
        "activation_dropout": float(model.get("activation_dropout", 0.0)),
        "projection_dropout": float(model.get("dropout_input", 0.0)),
        "layer_drop": float(model.get("encoder_layerdrop", 0.0)),
        "frame_rule": "fairseq",
        "normalize_input": bool(task.get("normalize", False)),
    }


def pretrain_config(
    model: dict[str, Any],
    task: dict[str, Any],
    criterion: dict[str, Any],
    symbols: list[list[str]],
    origin: str,
) -> dict[str, Any]:
    """The masked-prediction fields (one label set; cluster k at dictionary row 4 + k)."""
    if len(symbols) != 1:
        raise CheckpointError(f"{origin}: {len(symbols)} label dictionaries; only one is supported")
    if model.get("target_glu", False):
        raise CheckpointError(f"{origin}: target_glu=True is not supported")
    special = [s for s in symbols[0] if s in ("<s>", "<pad>", "</s>", "<unk>")]
    clusters = symbols[0][len(special) :]
    if symbols[0][: len(special)] != special or clusters != [str(k) for k in range(len(clusters))]:
        raise CheckpointError(
            f"{origin}: label dictionary is not <s> <pad> </s> <unk> 0 1 2 ...; got "
            f"{symbols[0][:10]} ..."
        )
    final_dim = int(model.get("final_dim", 0)) or int(model.get("encoder_embed_dim", 768))
    label_rate = model.get("label_rate", task.get("label_rate", 50))
    loss_weights = criterion.get("loss_weights") or [10.0]
    return {
        "num_classes": len(clusters),
        "num_special_labels": len(special),
        "final_dim": final_dim,
        "logit_temp": float(model.get("logit_temp", 0.1)),
        "label_rate": float(label_rate),
        "sample_rate": int(task.get("sample_rate", 16000)),
        "mask_prob": float(model.get("mask_prob", 0.65)),
        "mask_length": int(model.get("mask_length", 10)),
        "feature_grad_mult": float(model.get("feature_grad_mult", 1.0)),
        "feature_penalty_weight": float(loss_weights[0]),
        "pred_masked_weight": float(criterion.get("pred_masked_weight", 1.0)),
        "pred_nomask_weight": float(criterion.get("pred_nomask_weight", 0.0)),
    }


def native_state(state: dict[str, Tensor], origin: str) -> dict[str, Tensor]:
    """fairseq HubertModel parameter names -> ours."""
    state = dict(state)
    fused: dict[str, Tensor] = {
        "encoder.transformer.pos_conv_embed.conv.weight": pos_conv_weight(
            state, "encoder.pos_conv.0", origin
        )
    }
    for index in range(layer_indices(state, r"encoder\.layers\.(\d+)\.", origin)):
        prefix = f"encoder.layers.{index}.self_attn."
        for name, value in fuse_qkv(state, prefix, ("q_proj", "k_proj", "v_proj")).items():
            fused[f"encoder.transformer.layers.{index}.attention.{name}"] = value
    return {**rename(state, _RULES, origin), **fused}


def hubert_checkpoint(
    model_cfg: dict[str, Any],
    task_cfg: dict[str, Any],
    criterion_cfg: dict[str, Any],
    state: dict[str, Tensor],
    symbols: list[list[str]],
    origin: str,
    reader: str,
) -> LoadedCheckpoint:
    """A LoadedCheckpoint for fairseq-named HuBERT weights and configs."""
    native = native_state(state, origin)
    pretraining = "label_embeddings" in native and "final_proj.weight" in native
    try:
        config = encoder_config(model_cfg, task_cfg, state)
        if pretraining:
            config.update(pretrain_config(model_cfg, task_cfg, criterion_cfg, symbols, origin))
    except (TypeError, ValueError) as error:  # int("abc"), float(None) on a config value
        raise CheckpointError(
            f"{origin}: a model/task config value is not a number ({error})"
        ) from None
    if pretraining:
        untied = native["final_proj.weight"].shape[0] != config["final_dim"]
        if untied:
            raise CheckpointError(f"{origin}: untie_final_proj with several label sets")
        return LoadedCheckpoint("hubert_pretrain", config, native, reader)
    native = {key: value for key, value in native.items() if key.startswith("encoder.")}
    return LoadedCheckpoint("hubert", config, native, reader)


def _symbols(task_state: Any) -> list[list[str]]:
    if not isinstance(task_state, dict):
        return []
    return [list(d.symbols) for d in task_state.get("dictionaries", []) if hasattr(d, "symbols")]


class FairseqReader:
    """A fairseq HuBERT checkpoint (pretraining or `hubert_ctc` fine-tuning)."""

    name = "fairseq"

    def matches(self, source: CheckpointSource) -> bool:
        """A pickle with `model` and `cfg`/`args`, holding HuBERT parameters."""
        if not source.is_pickle:
            return False
        payload = source.payload
        if not isinstance(payload, dict) or not isinstance(payload.get("model"), dict):
            return False
        if not isinstance(payload.get("cfg") or payload.get("args"), dict):
            return False
        keys = payload["model"]
        return "encoder.pos_conv.0.bias" in keys or f"{_CTC_PREFIX}encoder.pos_conv.0.bias" in keys

    def read(self, source: CheckpointSource, overrides: dict[str, Any]) -> LoadedCheckpoint:
        """Config from cfg.model / cfg.task / cfg.criterion (or flat `args`)."""
        payload = source.payload
        origin = str(source.path)
        cfg = payload.get("cfg") or {}
        if not cfg:  # legacy checkpoints: one flat argparse namespace
            args = payload["args"]
            cfg = {"model": args, "task": args, "criterion": args}
        state = tensors_only(payload["model"], origin)
        model_cfg = dict(cfg.get("model") or {})
        task_cfg = dict(cfg.get("task") or {})
        if any(key.startswith(_CTC_PREFIX) for key in state):
            inner = model_cfg.get("w2v_args") or {}
            model_cfg, task_cfg = dict(inner.get("model") or {}), dict(inner.get("task") or {})
            task_cfg["normalize"] = cfg.get("task", {}).get("normalize", task_cfg.get("normalize"))
            state = {  # the encoder only: fine-tuning drops the pretraining heads
                key[len(_CTC_PREFIX) :]: value
                for key, value in state.items()
                if key.startswith(_CTC_PREFIX)
                and not key[len(_CTC_PREFIX) :].startswith(("final_proj.", "label_embs_concat"))
            }
            if not model_cfg:
                raise CheckpointError(f"{origin}: fine-tuned checkpoint without w2v_args")
        if model_cfg.get("_name", "hubert") != "hubert":
            raise CheckpointError(
                f"{origin}: fairseq model {model_cfg.get('_name')!r} is not HuBERT"
            )
        symbols = _symbols(payload.get("task_state"))
        criterion = dict(cfg.get("criterion") or {})
        return hubert_checkpoint(model_cfg, task_cfg, criterion, state, symbols, origin, self.name)


class S3prlReader:
    """s3prl's converted HuBERT checkpoint."""

    name = "s3prl"

    def matches(self, source: CheckpointSource) -> bool:
        """A pickle with `model_cfg`, `task_cfg` and `model_weight`."""
        if not source.is_pickle:
            return False
        payload = source.payload
        return isinstance(payload, dict) and {"model_cfg", "task_cfg", "model_weight"} <= set(
            payload
        )

    def read(self, source: CheckpointSource, overrides: dict[str, Any]) -> LoadedCheckpoint:
        """Config from model_cfg / task_cfg, labels from dictionaries_symbols."""
        payload = source.payload
        origin = str(source.path)
        state = tensors_only(payload["model_weight"], origin)
        symbols = [list(s) for s in payload.get("dictionaries_symbols") or []]
        model_cfg, task_cfg = dict(payload["model_cfg"]), dict(payload["task_cfg"])
        return hubert_checkpoint(model_cfg, task_cfg, {}, state, symbols, origin, self.name)


READERS = [FairseqReader(), S3prlReader()]
