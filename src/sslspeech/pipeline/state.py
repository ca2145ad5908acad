"""What a pipeline remembers about each stage: fingerprints of files and a JSON state per stage."""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from sslspeech.errors import SSLSpeechError
from sslspeech.utils.fileio import atomic_open

Status = Literal["pending", "running", "done", "failed"]

# Files up to this size are fingerprinted by content; bigger ones (checkpoints, feature shards)
# by size + mtime + path, which is cheap and changes whenever the file is rewritten.
SMALL_FILE_BYTES = 1 << 20

STATE_DIR = "state"


def fingerprint(path: Path) -> str:
    """A short hash of the current content of a file or directory tree ("missing" if absent)."""
    if path.is_dir():
        digest = hashlib.sha256(b"dir")
        for child in sorted(p for p in path.rglob("*") if p.is_file()):
            relative = child.relative_to(path).as_posix()
            if relative.startswith(".") or "/." in relative:
                continue  # temporary files of atomic writes in progress
            digest.update(relative.encode() + b"\0" + _file_fingerprint(child).encode() + b"\0")
        return digest.hexdigest()[:16]
    if path.is_file():
        return _file_fingerprint(path)
    return "missing"


def _file_fingerprint(path: Path) -> str:
    stat = path.stat()
    if stat.st_size <= SMALL_FILE_BYTES:
        return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    key = f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}"
    return "stat:" + hashlib.sha256(key.encode()).hexdigest()[:16]


def hash_inputs(fingerprints: dict[str, str], params: dict[str, Any]) -> str:
    """One hash over the inputs' fingerprints and the stage's parameters."""
    blob = json.dumps({"inputs": fingerprints, "params": params}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(kw_only=True)
class StageState:
    """The JSON record of one stage in RUN_DIR/state/<name>.json."""

    name: str
    status: Status = "pending"
    input_hash: str = ""
    inputs: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    started: float | None = None
    ended: float | None = None
    attempts: int = 0
    pid: int | None = None
    host: str = ""
    error: str = ""
    shards: int = 0
    """Shards of a sharded stage's latest attempt (0: not sharded); see `shards_done`."""

    @property
    def duration(self) -> float | None:
        """Seconds of the latest attempt (up to now while it runs), or None before it starts."""
        if self.started is None:
            return None
        end = self.ended if self.ended is not None else time.time()
        return max(0.0, end - self.started)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def state_path(run_dir: Path, name: str) -> Path:
    return run_dir / STATE_DIR / f"{name}.json"


def read_state(run_dir: Path, name: str) -> StageState:
    """The recorded state of stage `name`, or a pending one when none was recorded."""
    path = state_path(run_dir, name)
    if not path.is_file():
        return StageState(name=name)
    try:
        data = json.loads(path.read_text())
        return StageState(**data)
    except (json.JSONDecodeError, TypeError) as error:
        raise SSLSpeechError(
            f"{path}: unreadable stage state ({error}); delete the file to rerun stage {name!r}"
        ) from error


def write_state(run_dir: Path, state: StageState) -> None:
    """Write the state atomically: a crash leaves the old record or the new one."""
    state.pid = os.getpid() if state.status == "running" else state.pid
    with atomic_open(state_path(run_dir, state.name)) as handle:
        json.dump(state.to_dict(), handle, indent=2, sort_keys=True, default=str)
        handle.write("\n")


def shard_marker(run_dir: Path, name: str, shard: int, num_shards: int) -> Path:
    """The file a shard of stage `name` leaves once it is done (what `pipeline status` counts)."""
    return run_dir / STATE_DIR / f"{name}.shards" / f"shard-{shard:05d}-of-{num_shards:05d}.done"


def shards_done(run_dir: Path, name: str, num_shards: int) -> int:
    """How many of the `num_shards` shards of stage `name` are done."""
    folder = shard_marker(run_dir, name, 0, num_shards).parent
    return len(list(folder.glob(f"shard-*-of-{num_shards:05d}.done")))
