"""One process at a time in a directory: an advisory file lock (flock, released by the kernel
when its holder dies) that records who holds it, so that a second process can say so."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from sslspeech.errors import SSLSpeechError


class LockHeldError(SSLSpeechError):
    """Another process holds the lock of this directory."""


@contextlib.contextmanager
def hold_lock(path: str | os.PathLike[str], *, what: str, advice: str) -> Iterator[None]:
    """Hold the lock file `path` for the block; when another process holds it, raise a
    LockHeldError naming `what` runs there, its pid, host and start time, and `advice`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockHeldError(
                f"another {what} is running in {path.parent}: {_holder(handle)} (lock {path}); "
                f"{advice}"
            ) from None
        _write_holder(handle)
        try:
            yield
        finally:
            handle.truncate(0)
            fcntl.flock(handle, fcntl.LOCK_UN)


def lock_held(path: str | os.PathLike[str]) -> bool:
    """True while some process holds the lock file `path`."""
    path = Path(path)
    if not path.is_file():
        return False
    with path.open("a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def _write_holder(handle: IO[str]) -> None:
    handle.truncate(0)
    json.dump({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}, handle)
    handle.flush()


def _holder(handle: IO[str]) -> str:
    """ "pid P on HOST since TIME" from the lock file (unknown while the holder writes it)."""
    handle.seek(0)
    try:
        holder: dict[str, Any] = json.loads(handle.read())
        since = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(float(holder["since"])))
        return f"pid {holder['pid']} on {holder['host']} since {since}"
    except (ValueError, KeyError, TypeError):
        return "holder unknown (it is starting)"
