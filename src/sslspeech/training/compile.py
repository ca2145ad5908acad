"""Compiled training (`run.compile`): the model compiled once with dynamic shapes, and the
counts that show whether it stays one graph (graph breaks, compiled frames)."""

from __future__ import annotations

from torch import nn


def compile_for_training(model: nn.Module, backend: str = "inductor") -> None:
    """Compile `model`'s forward in place, every size dynamic from the first batch on: padded
    lengths change from batch to batch, and each would otherwise compile anew."""
    model.compile(dynamic=True, backend=backend)


def compile_counts() -> dict[str, int]:
    """Graph breaks and compiled frames (first compiles and recompilations) in this process."""
    from torch._dynamo.utils import counters

    return {
        "graph_breaks": sum(counters["graph_break"].values()),
        "compiled_frames": counters["frames"]["ok"],
    }
