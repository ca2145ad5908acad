"""Helpers shared by the format readers: weight-norm folding, q/k/v fusion, strict key mapping."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from sslspeech.errors import CheckpointError


def fold_weight_norm(g: Tensor, v: Tensor, dim: int = 2) -> Tensor:
    """The effective weight of torch weight norm: w = v * g / ||v||, the norm taken over every
    axis but `dim` (pos-conv uses dim=2: one g per kernel tap)."""
    axes = [axis for axis in range(v.ndim) if axis != dim]
    return v * (g / torch.linalg.vector_norm(v, dim=axes, keepdim=True))


def split_weight_norm(weight: Tensor, dim: int = 2) -> tuple[Tensor, Tensor]:
    """(g, v) with v = weight, g = ||weight|| over every axis but `dim`; folds back to `weight`."""
    axes = [axis for axis in range(weight.ndim) if axis != dim]
    return torch.linalg.vector_norm(weight, dim=axes, keepdim=True), weight.clone()


def pos_conv_weight(state: dict[str, Tensor], prefix: str, origin: str) -> Tensor:
    """The pos-conv weight under `prefix` (".weight", ".weight_g/_v" or parametrizations)."""
    layouts = (
        (f"{prefix}.weight_g", f"{prefix}.weight_v"),
        (
            f"{prefix}.parametrizations.weight.original0",
            f"{prefix}.parametrizations.weight.original1",
        ),
    )
    for g_key, v_key in layouts:
        if g_key in state and v_key in state:
            return fold_weight_norm(state.pop(g_key), state.pop(v_key))
    if f"{prefix}.weight" in state:
        return state.pop(f"{prefix}.weight")
    raise CheckpointError(f"{origin}: no positional conv weight under {prefix!r}")


def fuse_qkv(
    state: dict[str, Tensor], prefix: str, names: tuple[str, str, str]
) -> dict[str, Tensor]:
    """Pop `prefix.{q,k,v}.{weight,bias}` and return the fused `qkv.weight` / `qkv.bias`."""
    out: dict[str, Tensor] = {}
    for kind in ("weight", "bias"):
        keys = [f"{prefix}{name}.{kind}" for name in names]
        present = [key in state for key in keys]
        if all(present):
            out[f"qkv.{kind}"] = torch.cat([state.pop(key) for key in keys])
        elif any(present):
            raise CheckpointError(f"incomplete attention projections: {keys}")
    return out


Rule = tuple[str, str | Callable[[re.Match[str]], str] | None]


def rename(state: dict[str, Tensor], rules: Iterable[Rule], origin: str) -> dict[str, Tensor]:
    """Map every key through the first matching (regex, replacement) rule; a None replacement
    drops the key; a key no rule matches is an error naming it."""
    compiled = [(re.compile(pattern), replacement) for pattern, replacement in rules]
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        for pattern, replacement in compiled:
            match = pattern.fullmatch(key)
            if match is None:
                continue
            if replacement is not None:
                new = replacement(match) if callable(replacement) else match.expand(replacement)
                out[new] = value
            break
        else:
            raise CheckpointError(f"{origin}: unexpected parameter {key!r}")
    return out


def tensors_only(state: Any, origin: str) -> dict[str, Tensor]:
    """A state dict whose values are all tensors (error otherwise)."""
    if not isinstance(state, dict):
        raise CheckpointError(f"{origin}: expected a state dict, found {type(state).__name__}")
    bad = [key for key, value in state.items() if not isinstance(value, Tensor)]
    if bad:
        raise CheckpointError(f"{origin}: non-tensor entries in the state dict: {bad[:5]}")
    return dict(state)


def layer_indices(state: dict[str, Tensor], pattern: str, origin: str = "checkpoint") -> int:
    """Number of layers: 1 + the largest index captured by `pattern` (0 when none)."""
    regex = re.compile(pattern)
    indices = [int(m.group(1)) for key in state if (m := regex.match(key))]
    count = max(indices) + 1 if indices else 0
    if count > len(state):  # every layer has a key: a larger index would loop for nothing
        raise CheckpointError(
            f"{origin}: a state dict key names layer {count - 1} ({pattern!r}), but the state "
            f"dict has only {len(state)} entries; the checkpoint is corrupt or hostile"
        )
    return count


def conv_layers_from_state(
    state: dict[str, Tensor], weight_key: Callable[[int], str], strides: Iterable[int] | None
) -> tuple[tuple[int, int, int], ...]:
    """(channels, kernel, stride) per conv layer read from conv weights (strides given or the
    wav2vec2 defaults 5, 2, 2, ...)."""
    layers = []
    index = 0
    while weight_key(index) in state:
        weight = state[weight_key(index)]
        layers.append((int(weight.shape[0]), int(weight.shape[2])))
        index += 1
    if not layers:
        raise CheckpointError(f"no conv extractor weights found (looked for {weight_key(0)!r})")
    stride_list = list(strides) if strides is not None else [5] + [2] * (len(layers) - 1)
    return tuple((c, k, s) for (c, k), s in zip(layers, stride_list, strict=True))
