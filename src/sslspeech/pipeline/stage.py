"""A stage: a typed function from files on disk to files on disk."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Resources = Literal["cpu", "gpu", "train"]


@dataclass(frozen=True, kw_only=True)
class StageContext:
    """What a stage function gets: its named paths and parameters, and whether to resume."""

    name: str
    run_dir: Path
    inputs: Mapping[str, Path]
    outputs: Mapping[str, Path]
    params: Mapping[str, Any]
    device: str = "cpu"
    resume: bool = False
    """True when an earlier attempt with the same inputs did not finish (crash, kill)."""
    shard: int | None = None
    """A sharded stage's one shard to do (0-based); None: every shard not yet done, then finish."""
    num_shards: int = 1
    """Shards the per-utterance work of a sharded stage is cut into."""
    processes: int = 1
    """Processes of a distributed stage's job (see `Stage.processes`)."""


StageFunction = Callable[[StageContext], Mapping[str, Any]]


@dataclass(frozen=True, kw_only=True)
class Stage:
    """`function(context) -> key results`; it writes every path of `outputs` and reads `inputs`.

    The runner skips the stage when all outputs exist unchanged and the inputs and `params`
    hash to the recorded value. `function` must be a module-level function (SLURM pickles it).
    """

    name: str
    function: StageFunction
    inputs: Mapping[str, Path] = field(default_factory=dict)
    outputs: Mapping[str, Path] = field(default_factory=dict)
    params: Mapping[str, Any] = field(default_factory=dict)
    resources: Resources = "cpu"
    """Which SLURM job the stage needs: a CPU job, one GPU, or the training launcher."""
    clean: tuple[Path, ...] = ()
    """Paths removed before a fresh (not resumed) attempt, e.g. a training work directory."""
    shard_count: Callable[[StageContext], int] | None = None
    """Per-utterance stages: the number of shards, from the context (module-level function).
    Each shard runs as `function(context)` with `context.shard` set (a local process or an
    array job), then `function` once more with `shard=None` finishes (e.g. joins parts)."""
    processes: int = 1
    """Distributed stages (k-means): the processes of its one torch.distributed job. Under the
    local executor `function` starts them itself (`context.processes`); under SLURM they are
    the tasks of one job, each running `function` with torchrun's variables set. Not part of
    the input hash: N processes give the result of one."""

    def context(self, run_dir: Path, device: str, resume: bool) -> StageContext:
        return StageContext(
            name=self.name,
            run_dir=run_dir,
            inputs=dict(self.inputs),
            outputs=dict(self.outputs),
            params=dict(self.params),
            device=device,
            resume=resume,
            processes=self.processes,
        )
