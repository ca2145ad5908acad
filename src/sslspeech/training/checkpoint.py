"""Training checkpoints: the schema of one save (`TrainingCheckpoint`), one atomic file per
save, `last.pt` / `best.pt` links, pruning, RNG states.

File layout (format version 1): a `torch.save` dict of plain containers and tensors with
`format`, `version`, the model part (`model_type`, `model_config`, `model`: the bare model's
state dict, teacher and codebooks included; written and read by `sslspeech.interop.native`,
which `from_pretrained` uses too), `optimizer`, `scheduler`, `scaler`, `step`, `epoch`,
`world_size`, `ranks` (per-rank sampler state and RNG states) and `config` (the resolved
training config). Loading never unpickles anything but those (`weights_only=True`).
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sslspeech.errors import CheckpointError
from sslspeech.interop import LoadedCheckpoint
from sslspeech.interop.native import model_part, read_model_part
from sslspeech.utils.fileio import atomic_open, atomic_path, nested_nbytes

log = logging.getLogger(__name__)

FORMAT = "sslspeech-training-checkpoint"
VERSION = 1
_STEP_FILE = re.compile(r"^step_(\d+)\.pt$")
_RUN_KEYS = ("optimizer", "scheduler", "scaler", "step", "epoch", "world_size", "ranks", "config")


@dataclass
class TrainingCheckpoint:
    """Everything one save holds: the model, the optimizer state and where the run stands."""

    model: LoadedCheckpoint
    """Model type, model config fields and the bare model's state dict."""
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    scaler: dict[str, Any]
    step: int
    """Optimizer steps done."""
    epoch: int
    world_size: int
    """Processes of the run that saved it."""
    ranks: list[dict[str, Any]]
    """Per rank: `rank`, `sampler` (state with `position`), `rng` (`capture_rng`), `checksum`."""
    config: dict[str, Any]
    """The resolved training config (`TrainConfig.to_dict()`)."""

    def to_payload(self) -> dict[str, Any]:
        """The dict `torch.save` writes."""
        model = model_part(self.model.model_type, self.model.config, self.model.state_dict)
        run = {key: getattr(self, key) for key in _RUN_KEYS}
        return {"format": FORMAT, "version": VERSION, **model, **run}

    @classmethod
    def from_payload(cls, payload: Any, origin: str) -> TrainingCheckpoint:
        """Read back what `to_payload` wrote (an error naming `origin` otherwise)."""
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise CheckpointError(
                f"{origin} is not an sslspeech training checkpoint (no format={FORMAT!r} key)"
            )
        version = payload.get("version", VERSION)
        missing = [key for key in _RUN_KEYS if key not in payload]
        if version != VERSION or missing:
            raise CheckpointError(
                f"{origin}: training checkpoint of version {version!r} missing {missing}; this "
                f"sslspeech reads version {VERSION} (use the sslspeech that wrote it)"
            )
        model = read_model_part(payload, origin, "training")
        return cls(model=model, **{key: payload[key] for key in _RUN_KEYS})

    def save(self, path: str | os.PathLike[str]) -> None:
        """torch.save to a temporary file, then rename: readers never see half a checkpoint."""
        payload = self.to_payload()
        with atomic_path(path, expected_bytes=nested_nbytes(payload)) as tmp:
            torch.save(payload, tmp)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TrainingCheckpoint:
        """Read a training checkpoint on CPU (plain containers and tensors only)."""
        path = Path(path)
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise CheckpointError(f"checkpoint {path} does not exist") from None
        except Exception as error:  # torch raises several types for truncated or foreign pickles
            raise CheckpointError(
                f"cannot read training checkpoint {path}: {error}; delete it to resume from the "
                "previous one"
            ) from error
        return cls.from_payload(payload, str(path))


# ----------------------------------------------------------------------------- RNG states


def capture_rng() -> dict[str, Any]:
    """Every random generator of this process: python, numpy, torch CPU, CUDA when present."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()  # legacy global numpy RNG
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Mapping[str, Any]) -> None:
    """Put back the generators saved by `capture_rng`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["name"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
        else:
            log.warning(
                "checkpoint has %d CUDA RNG states, %d devices are visible: CUDA RNGs not restored",
                len(cuda_states),
                torch.cuda.device_count(),
            )


# ----------------------------------------------------------------------------- files


def list_checkpoints(directory: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """(step, path) of every `step_N.pt` in `directory`, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        match = _STEP_FILE.match(path.name)
        if match and path.is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(directory: str | os.PathLike[str]) -> Path | None:
    """The newest `step_N.pt` (what `last.pt` points to), or `last.pt` alone, or None."""
    found = list_checkpoints(directory)
    if found:
        return found[-1][1]
    last = Path(directory) / "last.pt"
    return last if last.is_file() else None


def link(target: Path, link_path: Path) -> None:
    """Point `link_path` at `target` atomically: relative symlink, else hard link, else copy."""
    link_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = link_path.with_name(f".{link_path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        try:
            tmp.symlink_to(os.path.relpath(target, link_path.parent))
        except OSError:
            try:
                os.link(target, tmp)
            except OSError:
                shutil.copyfile(target, tmp)
        tmp.replace(link_path)
    finally:
        tmp.unlink(missing_ok=True)


class CheckpointDir:
    """`step_N.pt` files with `last.pt` and `best.pt`; keeps the last k and every N-th step."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        save_every: int,
        keep_last: int = 1,
        keep_every: int = 0,
    ) -> None:
        self.directory = Path(directory)
        self.save_every = save_every
        self.keep_last = keep_last
        self.keep_every = keep_every

    @property
    def last(self) -> Path:
        """Link to the newest checkpoint."""
        return self.directory / "last.pt"

    @property
    def best(self) -> Path:
        """Link to the checkpoint with the best validation metric."""
        return self.directory / "best.pt"

    def path(self, step: int) -> Path:
        """Where the checkpoint of `step` goes."""
        return self.directory / f"step_{step}.pt"

    def due(self, step: int) -> bool:
        """Whether `step` is a saving step."""
        return step > 0 and step % self.save_every == 0

    def save(self, checkpoint: TrainingCheckpoint) -> Path:
        """Write `step_N.pt`, point `last.pt` at it, prune old ones; returns its path."""
        path = self.path(checkpoint.step)
        checkpoint.save(path)
        link(path, self.last)
        self.prune()
        log.info("saved checkpoint %s", path)
        return path

    def latest(self) -> Path | None:
        """The checkpoint to resume from."""
        return latest_checkpoint(self.directory)

    def prune(self) -> None:
        """Delete step checkpoints that are neither recent, every-N-th, nor the best."""
        found = list_checkpoints(self.directory)
        if self.keep_last < 0:
            return
        keep = {step for step, _ in found[-self.keep_last :]}
        if self.keep_every > 0:
            keep |= {step for step, _ in found if step % self.keep_every == 0}
        best = self.best_record()
        if best is not None:
            keep.add(int(best["step"]))
        for step, path in found:
            if step not in keep:
                path.unlink(missing_ok=True)
                log.debug("pruned checkpoint %s", path)

    def best_record(self) -> dict[str, Any] | None:
        """{"step", "metric", "value"} of `best.pt`, if any validation ran."""
        record = self.directory / "best.json"
        if not record.is_file():
            return None
        value: dict[str, Any] = json.loads(record.read_text(encoding="utf-8"))
        return value

    def update_best(self, step: int, metric: str, value: float) -> bool:
        """Point `best.pt` at `step_N.pt` if `value` beats the best so far (lower is better)."""
        current = self.best_record()
        if current is not None and current["metric"] == metric and current["value"] <= value:
            return False
        path = self.path(step)
        if not path.is_file():
            raise CheckpointError(f"cannot mark {path} as best: the file does not exist")
        link(path, self.best)
        with atomic_open(self.directory / "best.json", "w", encoding="utf-8") as handle:
            json.dump({"step": step, "metric": metric, "value": value, "path": path.name}, handle)
        log.info("best checkpoint is now %s (%s=%.4f)", path.name, metric, value)
        return True
