"""Compiled training (`run.compile`): the model compiled once with dynamic shapes, and the
counts that show whether it stays one graph (graph breaks, compiled frames, inductor graphs)."""

from __future__ import annotations

import torch
import torch.fx.experimental._config as shape_config
from torch import nn


def compile_for_training(model: nn.Module) -> None:
    """Compile `model`'s forward in place, every size dynamic from the first batch on: padded
    lengths change from batch to batch, and each would otherwise compile anew.

    Two settings of the whole process go with it (torch reads them when it traces, at the
    first batch):
    - sizes that happen to be equal in the first batch (say, 10 masked frames and 10 labels)
      get symbols of their own, not one shared symbol whose equality a later batch breaks
      (dynamo's "duck sizing": a recompilation);
    - Python floats (norm epsilons, dropout rates, temperatures) are traced as constants: as
      symbols, the first one an op needs as a number makes dynamo trace the model twice.
    """
    shape_config.use_duck_shape = False
    torch._dynamo.config.specialize_float = True
    model.compile(dynamic=True)


def compile_counts() -> dict[str, int]:
    """Graph breaks, compiled frames (first compiles and recompilations) and graphs lowered by
    inductor (a forward and a backward per training frame; compiled or read from its cache)
    in this process."""
    from torch._dynamo.utils import counters

    inductor = counters["inductor"]
    return {
        "graph_breaks": sum(counters["graph_break"].values()),
        "compiled_frames": counters["frames"]["ok"],
        "inductor_graphs": sum(
            inductor[f"fxgraph_cache_{outcome}"] for outcome in ("miss", "hit", "bypass")
        ),
    }
