"""Local multi-process launcher: N copies of `sslspeech train CONFIG` on this machine, each with
the torchrun environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), joined over
gloo (CPU) or NCCL (one GPU each). `torchrun --nproc-per-node N -m sslspeech train CONFIG` does
the same."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType

log = logging.getLogger(__name__)

FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def worker_environments(
    nproc: int, port: int, base: Mapping[str, str] | None = None
) -> list[dict[str, str]]:
    """The environment of each of `nproc` local workers (torchrun's variables)."""
    base = dict(os.environ if base is None else base)
    threads = str(max(1, (os.cpu_count() or 1) // nproc))
    envs = []
    for rank in range(nproc):
        env = dict(base)
        env.update(
            RANK=str(rank),
            WORLD_SIZE=str(nproc),
            LOCAL_RANK=str(rank),
            LOCAL_WORLD_SIZE=str(nproc),
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
        )
        env.setdefault("OMP_NUM_THREADS", threads)  # N processes share the cores
        envs.append(env)
    return envs


def worker_command(config_path: str | os.PathLike[str]) -> list[str]:
    """What each worker runs: the train command on the resolved config."""
    return [sys.executable, "-m", "sslspeech", "train", str(config_path)]


def launch_local(
    config_path: str | os.PathLike[str], nproc: int, *, command: Sequence[str] | None = None
) -> int:
    """Run `nproc` training workers (see `run_workers`)."""
    return run_workers(list(command or worker_command(Path(config_path))), nproc)


def run_workers(command: Sequence[str], nproc: int) -> int:
    """Run `nproc` copies of `command` until they finish; signals go to every worker, and when
    one fails the others are stopped (they would wait for it forever). Returns the first
    failing exit status, else 0."""
    port = free_port()
    workers = [subprocess.Popen(list(command), env=env) for env in worker_environments(nproc, port)]
    log.info("started %d local workers (pids %s), port %d", nproc, [w.pid for w in workers], port)

    def forward(signum: int, frame: FrameType | None) -> None:
        del frame
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signum)

    previous = {signum: signal.signal(signum, forward) for signum in FORWARDED_SIGNALS}
    try:
        return _wait(workers)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _wait(workers: list[subprocess.Popen[bytes]], grace_seconds: float = 10.0) -> int:
    while True:
        codes = [worker.poll() for worker in workers]
        failed = [code for code in codes if code not in (None, 0)]
        if failed:
            _stop(workers, grace_seconds)
            return int(failed[0])
        if all(code == 0 for code in codes):
            return 0
        time.sleep(0.1)


def _stop(workers: list[subprocess.Popen[bytes]], grace_seconds: float) -> None:
    for worker in workers:
        if worker.poll() is None:
            worker.terminate()
    deadline = time.monotonic() + grace_seconds
    for worker in workers:
        try:
            worker.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
