"""The one place that reads the distributed environment (torchrun, SLURM, or nothing) and
starts or stops the process group. Everything else receives a `DistributedEnvironment`."""

from __future__ import annotations

import datetime
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist

from sslspeech.errors import ConfigError

log = logging.getLogger(__name__)

_PORT_RANGE = (20_000, 60_000)


@dataclass(frozen=True)
class DistributedEnvironment:
    """Where this process stands: its rank among `world_size` and the device it computes on."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    master_addr: str
    master_port: int
    device: torch.device
    source: str
    """"torchrun" (also our local launcher and submitit), "slurm" or "single"."""

    @property
    def is_main(self) -> bool:
        """Rank 0 writes files and logs."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        """More than one process."""
        return self.world_size > 1


def started_by_torchrun(environ: Mapping[str, str] | None = None) -> bool:
    """Whether torchrun (or our local launcher) started this process as one of its ranks."""
    env = os.environ if environ is None else environ
    return "RANK" in env and "WORLD_SIZE" in env


def resolve_environment(
    device: str = "auto", environ: Mapping[str, str] | None = None
) -> DistributedEnvironment:
    """Rank, world size and device from torchrun variables, else SLURM ones, else one process.

    `device` is "auto" (CUDA when available), "cpu" or "cuda"; each process takes the GPU of
    its local rank.
    """
    env = os.environ if environ is None else environ
    if started_by_torchrun(env):
        rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
        local_rank = int(env.get("LOCAL_RANK", rank))
        local_world = int(env.get("LOCAL_WORLD_SIZE", world))
        addr = env.get("MASTER_ADDR", "127.0.0.1")
        port = int(env.get("MASTER_PORT", _PORT_RANGE[0]))
        source = "torchrun"
    elif "SLURM_JOB_ID" in env and "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", 1)) > 1:
        rank, world = int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"])
        local_rank = int(env.get("SLURM_LOCALID", 0))
        local_world = int(env.get("SLURM_NTASKS_PER_NODE", "1").split("(")[0])
        addr = first_host(env.get("SLURM_JOB_NODELIST", env.get("SLURM_NODELIST", "127.0.0.1")))
        job_id = int(env["SLURM_JOB_ID"])
        port = _PORT_RANGE[0] + job_id % (_PORT_RANGE[1] - _PORT_RANGE[0])
        source = "slurm"
    else:
        rank, world, local_rank, local_world = 0, 1, 0, 1
        addr, port, source = "127.0.0.1", _PORT_RANGE[0], "single"
    if not 0 <= rank < world:
        raise ConfigError(f"rank {rank} is outside world size {world} ({source} environment)")
    return DistributedEnvironment(
        rank=rank,
        world_size=world,
        local_rank=local_rank,
        local_world_size=local_world,
        master_addr=addr,
        master_port=port,
        device=_device(device, local_rank),
        source=source,
    )


def _device(kind: str, local_rank: int) -> torch.device:
    if kind == "cpu" or (kind == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if kind in ("cuda", "auto"):
        if not torch.cuda.is_available():
            raise ConfigError("run.device is 'cuda' but CUDA is not available; use run.device=auto")
        count = torch.cuda.device_count()
        if count == 1:  # one visible GPU per process (SLURM / submitit set CUDA_VISIBLE_DEVICES)
            return torch.device("cuda", 0)
        return torch.device("cuda", local_rank % count)
    raise ConfigError(f"run.device must be auto, cpu or cuda; got {kind!r}")


def first_host(nodelist: str) -> str:
    """First host of a SLURM node list: "gpu[003-005,010],cpu1" -> "gpu003"."""
    match = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if match is None:
        raise ConfigError(f"cannot read the SLURM node list {nodelist!r}")
    prefix, ranges = match.groups()
    if not ranges:
        return prefix
    return prefix + ranges.split(",")[0].split("-")[0]


def init_process_group(
    env: DistributedEnvironment, backend: str = "auto", timeout_minutes: int = 30
) -> None:
    """Join the process group (NCCL on CUDA, gloo on CPU); nothing to do for one process."""
    if not env.is_distributed or dist.is_initialized():
        return
    if backend == "auto":
        backend = "nccl" if env.device.type == "cuda" else "gloo"
    if env.device.type == "cuda":
        torch.cuda.set_device(env.device)
    log.info(
        "joining process group: rank %d/%d via %s:%d (%s, %s)",
        env.rank,
        env.world_size,
        env.master_addr,
        env.master_port,
        backend,
        env.source,
    )
    dist.init_process_group(
        backend=backend,
        init_method=f"tcp://{env.master_addr}:{env.master_port}",
        rank=env.rank,
        world_size=env.world_size,
        timeout=datetime.timedelta(minutes=timeout_minutes),
        device_id=env.device if backend == "nccl" else None,
    )


def destroy_process_group() -> None:
    """Leave the process group if one was joined."""
    if dist.is_initialized():
        dist.destroy_process_group()


def cpu_group() -> dist.ProcessGroup | None:
    """A gloo group for small host-side agreements (stop flags) that must not sync the GPU."""
    if not dist.is_initialized():
        return None
    if dist.get_backend() == "gloo":
        return dist.group.WORLD
    return dist.new_group(backend="gloo")


def any_rank(flag: bool, group: dist.ProcessGroup | None) -> bool:
    """True on every rank when `flag` is True on at least one (host-side, via gloo)."""
    if group is None:
        return flag
    value = torch.tensor([int(flag)], dtype=torch.int32)
    dist.all_reduce(value, op=dist.ReduceOp.MAX, group=group)
    return bool(value.item())


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over ranks in place (no-op for one process); returns the tensor."""
    if dist.is_initialized():
        dist.all_reduce(tensor)
    return tensor


def barrier() -> None:
    """Wait for every rank (no-op for one process)."""
    if dist.is_initialized():
        dist.barrier()
