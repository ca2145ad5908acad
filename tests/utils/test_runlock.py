"""The directory lock shared by `pipeline run` and `train`: exclusive, and a refused process
learns who holds it (pid, host, since when) and what to do."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from sslspeech.utils.runlock import LockHeldError, hold_lock, lock_held


def test_a_held_lock_refuses_a_second_holder_and_names_the_first(tmp_path: Path) -> None:
    path = tmp_path / "run" / ".lock"
    assert not lock_held(path)
    with hold_lock(path, what="job", advice="wait for it"):
        assert lock_held(path)
        with pytest.raises(LockHeldError) as error, hold_lock(path, what="job", advice="x"):
            pass
        message = str(error.value)
        assert message.startswith(f"another job is running in {path.parent}: ")
        assert f"pid {os.getpid()} on {socket.gethostname()} since 20" in message
        assert message.endswith(f"(lock {path}); x")
    assert not lock_held(path) and path.read_text() == ""
    with hold_lock(path, what="job", advice="wait for it"):  # free again
        assert lock_held(path)
