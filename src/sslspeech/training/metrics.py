"""Training metrics: running means on the device, one JSONL line per log step (always, strict
JSON: a non-finite value is written as null), and optional wandb / TensorBoard sinks (a missing
package is reported once, never a crash)."""

from __future__ import annotations

import json
import logging
import math
import os
import resource
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from sslspeech.utils.fileio import append_line, atomic_open

log = logging.getLogger(__name__)


class Meter:
    """Sums of detached device tensors over a log window; averaged over ranks on `pop`."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}

    def add(self, values: Mapping[str, torch.Tensor | float]) -> None:
        """Add one observation per key (no host synchronization)."""
        for key, value in values.items():
            tensor = torch.as_tensor(value).detach().float().reshape(())
            self.sums[key] = self.sums[key] + tensor if key in self.sums else tensor.clone()
            self.counts[key] = self.counts.get(key, 0) + 1

    def pop(self, ratio: tuple[str, str] | None = ("loss_sum", "loss_count")) -> dict[str, float]:
        """Means over the window and over ranks (sums for the `ratio` pair, which becomes
        their quotient "loss"); resets the meter. Every rank must call it at the same step."""
        if not self.sums:
            return {}
        keys = sorted(self.sums)
        device = self.sums[keys[0]].device
        values = torch.stack([self.sums[k].to(device) for k in keys])
        counts = torch.tensor([float(self.counts[k]) for k in keys], device=device)
        if dist.is_initialized():
            both = torch.cat([values, counts])
            dist.all_reduce(both)
            values, counts = both[: len(keys)], both[len(keys) :]
        host = dict(zip(keys, values.tolist(), strict=True))
        means = {k: v / c for k, v, c in zip(keys, values.tolist(), counts.tolist(), strict=True)}
        self.sums.clear()
        self.counts.clear()
        if ratio is not None and ratio[0] in host:
            means["loss"] = host[ratio[0]] / max(host[ratio[1]], 1.0)
            means.pop(ratio[0])
            means.pop(ratio[1])
        return means


def memory_gb(device: torch.device) -> float:
    """Peak memory: CUDA allocations on a GPU, the process's peak RSS on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / (2**30 if sys.platform == "darwin" else 2**20)


class MetricsLog:
    """`metrics.jsonl` (one JSON object per line, flushed) plus the optional sinks."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        enabled: bool = True,
        wandb_project: str | None = None,
        wandb_mode: str = "offline",
        tensorboard_dir: str | os.PathLike[str] | None = None,
        config: Mapping[str, Any] | None = None,
        run_name: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.enabled = enabled
        self._wandb: Any = None
        self._tensorboard: Any = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if wandb_project:
            self._wandb = _start_wandb(
                wandb_project, wandb_mode, self.path.parent, config, run_name
            )
        if tensorboard_dir is not None:
            self._tensorboard = _start_tensorboard(Path(tensorboard_dir))

    def write(self, record: Mapping[str, Any]) -> None:
        """Append one record; numbers also go to the sinks under "<split>/<key>"."""
        if not self.enabled:
            return
        append_line(self.path, json_line(record))
        split, step = record.get("split", "train"), int(record.get("step", 0))
        numbers = {
            f"{split}/{k}": float(v)
            for k, v in record.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and k != "step"
        }
        if self._wandb is not None:
            self._wandb.log(numbers, step=step)
        if self._tensorboard is not None:
            for key, value in numbers.items():
                self._tensorboard.add_scalar(key, value, step)
            self._tensorboard.flush()

    def close(self) -> None:
        """Finish the sinks."""
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None


def _start_wandb(
    project: str, mode: str, folder: Path, config: Mapping[str, Any] | None, name: str | None
) -> Any:
    try:
        import wandb
    except ImportError:
        log.warning(
            "logging.wandb_project is set but wandb is not installed (pip install wandb); "
            "metrics go to metrics.jsonl only"
        )
        return None
    return wandb.init(
        project=project,
        mode=mode,
        dir=str(folder),
        config=dict(config or {}),
        name=name,
        resume="allow",
    )


def _start_tensorboard(folder: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.warning(
            "logging.tensorboard is true but tensorboard is not installed (pip install "
            "tensorboard); metrics go to metrics.jsonl only"
        )
        return None
    return SummaryWriter(log_dir=str(folder))


def read_metrics(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """The records of a metrics JSONL file (a torn last line, from a kill, is skipped)."""
    path = Path(path)
    if not path.is_file():
        return
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                log.warning("%s: skipping a torn line", path)


def truncate_metrics(path: str | os.PathLike[str], step: int) -> None:
    """Drop records after `step` (written by a run that died before its next checkpoint)."""
    path = Path(path)
    if not path.is_file():
        return
    kept = [record for record in read_metrics(path) if int(record.get("step", 0)) <= step]
    with atomic_open(path, "w", encoding="utf-8") as handle:
        for record in kept:
            handle.write(json_line(record))


def json_safe(value: Any) -> Any:
    """`value` with every NaN or infinite float replaced by None (JSON has neither)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return value


def json_line(record: Mapping[str, Any]) -> str:
    """One strict-JSON line of a record (non-finite numbers as null)."""
    return json.dumps(json_safe(record), allow_nan=False) + "\n"
