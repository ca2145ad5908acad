"""The distributed resolver: torchrun, SLURM and single-process environments; no hard-coded
`cuda:N` device strings in the training and launch code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from sslspeech.errors import ConfigError
from sslspeech.training.distributed import first_host, resolve_environment

SRC = Path(__file__).resolve().parents[2] / "src" / "sslspeech"


def test_torchrun_variables() -> None:
    env = resolve_environment(
        "cpu",
        {
            "RANK": "3",
            "WORLD_SIZE": "8",
            "LOCAL_RANK": "1",
            "LOCAL_WORLD_SIZE": "2",
            "MASTER_ADDR": "node7",
            "MASTER_PORT": "29500",
        },
    )
    assert (env.rank, env.world_size, env.local_rank, env.local_world_size) == (3, 8, 1, 2)
    assert (env.master_addr, env.master_port, env.source) == ("node7", 29500, "torchrun")
    assert env.device == torch.device("cpu") and not env.is_main and env.is_distributed


def test_slurm_variables() -> None:
    env = resolve_environment(
        "cpu",
        {
            "SLURM_JOB_ID": "123456",
            "SLURM_PROCID": "5",
            "SLURM_NTASKS": "16",
            "SLURM_LOCALID": "5",
            "SLURM_NTASKS_PER_NODE": "8(x2)",
            "SLURM_JOB_NODELIST": "gpu[012-013]",
        },
    )
    assert (env.rank, env.world_size, env.local_rank, env.local_world_size) == (5, 16, 5, 8)
    assert env.master_addr == "gpu012" and env.source == "slurm"
    assert 20_000 <= env.master_port < 60_000


def test_single_process_and_single_task_slurm_jobs() -> None:
    for environ in ({}, {"SLURM_JOB_ID": "1", "SLURM_PROCID": "0", "SLURM_NTASKS": "1"}):
        env = resolve_environment("cpu", environ)
        assert (env.rank, env.world_size, env.source) == (0, 1, "single") and env.is_main


def test_bad_rank_and_device_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="outside world size"):
        resolve_environment("cpu", {"RANK": "2", "WORLD_SIZE": "2"})
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_environment("cuda", {})


@pytest.mark.parametrize(
    ("nodelist", "host"),
    [("gpu[003-005,010]", "gpu003"), ("cpu1,cpu2", "cpu1"), ("n[7]", "n7"), ("single", "single")],
)
def test_first_host_of_a_slurm_node_list(nodelist: str, host: str) -> None:
    assert first_host(nodelist) == host


def test_no_device_strings_in_training_and_launch_code() -> None:
    pattern = re.compile(r"""["']cuda:|\.cuda\(\)|\.to\(["']cuda""")
    offenders = [
        str(path)
        for folder in ("training", "launch")
        for path in (SRC / folder).glob("*.py")
        if pattern.search(path.read_text())
    ]
    assert offenders == []
