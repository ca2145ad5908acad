"""Atomic writes: a reader sees the old file or the new one, never half of one.

A write that fails because the disk is full raises `DiskFullError` ("no space left on DIR
(needed about N MB ...)", or the MB written when the size is not known ahead) instead of the
raw ENOSPC or torch writer error; the temporary file is removed, so nothing partial is left.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from sslspeech.errors import DiskFullError

_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
#: What torch.save's C++ writer says when a write fails (it does not pass the errno on).
_TORCH_WRITE_FAILURES = ("unexpected pos", "iostream error", "file write failed")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], expected_bytes: int | None = None) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it is fsynced and renamed onto `path`.

    `expected_bytes` (the size about to be written, when known) goes into the disk-full message.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with tmp.open("rb+") as handle:
            os.fsync(handle.fileno())
        tmp.replace(target)
    except OSError as error:
        if error.errno not in _NO_SPACE:
            raise
        raise _disk_full(target, tmp, expected_bytes) from None
    except RuntimeError as error:
        needed = max(expected_bytes or 0, _size(tmp))
        failed_write = any(text in str(error) for text in _TORCH_WRITE_FAILURES)
        if not failed_write or shutil.disk_usage(target.parent).free >= needed:
            raise
        raise _disk_full(target, tmp, expected_bytes) from None
    finally:
        tmp.unlink(missing_ok=True)


def append_line(path: str | os.PathLike[str], line: str) -> None:
    """Append one text line to `path` (created if missing). When the disk is full the file is
    cut back to its previous end (no half line) and `DiskFullError` names it."""
    target = Path(path)
    with target.open("a", encoding="utf-8") as handle:
        end = handle.tell()
        try:
            handle.write(line)
            handle.flush()
        except OSError as error:
            if error.errno not in _NO_SPACE:
                raise
            with contextlib.suppress(OSError):
                handle.truncate(end)
            raise DiskFullError(
                f"no space left on {target.parent} while appending to {target.name} "
                f"({_megabytes(shutil.disk_usage(target.parent).free)} MB free; the file is "
                "intact up to its last full line); free some space, then rerun or resume"
            ) from None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _disk_full(target: Path, tmp: Path, expected_bytes: int | None) -> DiskFullError:
    written, free = _size(tmp), shutil.disk_usage(target.parent).free
    if expected_bytes:
        size = f"needed about {_megabytes(max(expected_bytes, written))} MB"
    else:  # a stream of unknown length: what fit is all we know
        size = f"{_megabytes(written)} MB written when it ran out"
    return DiskFullError(
        f"no space left on {target.parent} ({size} for {target.name}, {_megabytes(free)} MB "
        "free); free some space or write elsewhere, then rerun (nothing partial was left)"
    )


def _megabytes(count: int) -> str:
    return f"{count / 1e6:.1f}" if count < 10**7 else f"{count // 10**6}"


def nested_nbytes(value: Any) -> int:
    """Bytes of every array or tensor (anything with `nbytes`) in nested dicts/lists/tuples."""
    if isinstance(value, dict):
        return sum(nested_nbytes(item) for item in value.values())
    if isinstance(value, list | tuple):
        return sum(nested_nbytes(item) for item in value)
    nbytes = getattr(value, "nbytes", 0)
    return nbytes if isinstance(nbytes, int) else 0


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file for writing; it replaces `path` only if the block succeeds."""
    if not mode.startswith("w"):
        raise ValueError(f"atomic_open writes whole files; mode must start with 'w', got {mode!r}")
    with atomic_path(path) as tmp, tmp.open(mode, **kwargs) as handle:
        yield handle
