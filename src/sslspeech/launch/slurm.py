"""SLURM launcher (submitit): one training job of N nodes x G tasks (one GPU each), requeued on
preemption or time limit, and one small job per saved checkpoint for validation, so training
is never interrupted by it. The training code itself knows nothing of SLURM.

A preemption/time-limit signal (submitit's USR2, or USR1/TERM) makes the loop finish its step,
save a checkpoint and return; the job then hands over to submitit, which requeues it; the
requeued job resumes from `last.pt`.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sslspeech.errors import ConfigError
from sslspeech.training.config import TrainConfig

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM)


@dataclass(frozen=True, kw_only=True)
class SlurmOptions:
    """The resources of the training job (the spidr CLI's options)."""

    account: str | None = None
    """-A: account to charge."""
    nodes: int = 1
    """-N: nodes."""
    gpus_per_node: int = 1
    """-G: GPUs (and tasks) per node."""
    cpus_per_task: int | None = None
    """-c: CPU cores per task (data loading workers)."""
    time_minutes: int | None = None
    """-t: time limit of each job in minutes (the run is requeued until it is done)."""
    constraint: str | None = None
    """-C: node features, e.g. h100."""
    qos: str | None = None
    """-q: quality of service."""
    partition: str | None = None
    """-p: partition."""
    mem_per_gpu: str | None = None
    """Memory per GPU, e.g. 80G."""
    signal_delay_s: int = 120
    """Seconds between the time-limit signal and the kill: time to finish a step and save."""
    cluster: str | None = None
    """submitit cluster: None = detect (slurm on a login node), "local" = this machine (tests)."""

    def __post_init__(self) -> None:
        for name in ("nodes", "gpus_per_node"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1")

    def parameters(
        self, *, name: str, gpus: int | None = None, nodes: int | None = None
    ) -> dict[str, Any]:
        """AutoExecutor parameters of a job with these resources."""
        gpus = self.gpus_per_node if gpus is None else gpus
        params: dict[str, Any] = {
            "name": name,
            "nodes": self.nodes if nodes is None else nodes,
            "tasks_per_node": max(gpus, 1),
            "gpus_per_node": gpus,
        }
        if self.cpus_per_task is not None:
            params["cpus_per_task"] = self.cpus_per_task
        if self.time_minutes is not None:
            params["timeout_min"] = self.time_minutes
        slurm = {
            "slurm_account": self.account,
            "slurm_qos": self.qos,
            "slurm_partition": self.partition,
            "slurm_constraint": self.constraint,
            "slurm_mem_per_gpu": self.mem_per_gpu,
            "slurm_signal_delay_s": self.signal_delay_s,
        }
        params.update({key: value for key, value in slurm.items() if value is not None})
        return params


def make_executor(folder: str | os.PathLike[str], options: SlurmOptions, **params: Any) -> Any:
    """A submitit AutoExecutor writing its logs and pickles under `folder`."""
    try:
        import submitit
    except ImportError:
        raise ConfigError("--slurm needs submitit: pip install 'sslspeech[train]'") from None
    executor = submitit.AutoExecutor(folder=str(folder), cluster=options.cluster)
    if executor.cluster == "local":
        params = {
            k: v for k, v in params.items() if not k.startswith("slurm_") and k != "gpus_per_node"
        }
    executor.update_parameters(**params)
    return executor


def export_torch_distributed() -> None:
    """In a submitit task of a job of several: torchrun's variables for this task (the GPU is
    chosen from LOCAL_RANK by the resolver, whether the task sees one GPU or all the node's)."""
    import submitit

    if submitit.JobEnvironment().num_tasks > 1:
        submitit.helpers.TorchDistributedEnvironment().export(
            set_cuda_visible_devices=False, overwrite=True
        )


def requeue_current_job() -> bool:
    """`scontrol requeue $SLURM_JOB_ID` when running in a SLURM job (outside submitit)."""
    job_id = os.environ.get("SLURM_JOB_ID")
    if not job_id or shutil.which("scontrol") is None:
        return False
    log.info("requeueing SLURM job %s", job_id)
    subprocess.run(["scontrol", "requeue", job_id], check=True)
    return True


class TrainingJob:
    """The submitted callable: trains (or resumes) `config` on every task of the job.

    submitit calls `checkpoint()` on preemption/timeout to get what to requeue: the same job,
    which resumes from the run's last checkpoint.
    """

    def __init__(
        self,
        config: TrainConfig,
        options: SlurmOptions | None = None,
        apply_config_changes: bool = False,
    ) -> None:
        self.config = config
        self.options = options
        self.apply_config_changes = apply_config_changes

    def __call__(self) -> dict[str, Any]:
        from sslspeech.training.trainer import StopFlag, train

        export_torch_distributed()
        stop = StopFlag().install(STOP_SIGNALS)
        on_checkpoint = None
        if self.config.run.validation == "job" and self.config.data.val_manifest and self.options:
            on_checkpoint = ValidationLauncher(self.config, self.options)
        summary = train(
            self.config,
            stop=stop,
            on_checkpoint=on_checkpoint,
            apply_config_changes=self.apply_config_changes,
        )
        if summary["status"] == "preempted" and stop.signum is not None:
            # Hand over to submitit's own handler: it calls `checkpoint()` and requeues.
            handler = stop.previous.get(signal.SIGUSR2)
            stop.restore()
            if callable(handler):
                handler(signal.SIGUSR2, None)
        return summary

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """What submitit requeues: this job again (it resumes from last.pt)."""
        import submitit

        return submitit.helpers.DelayedSubmission(
            TrainingJob(self.config, self.options, self.apply_config_changes)
        )


class ValidationLauncher:
    """After each checkpoint (rank 0 of the training job): a 1-GPU job validating it."""

    def __init__(self, config: TrainConfig, options: SlurmOptions) -> None:
        self.config = config
        self.options = options

    def __call__(self, path: Path, step: int) -> None:
        import submitit

        workdir = Path(self.config.run.workdir)
        params = self.options.parameters(name=f"val-{step}", gpus=1, nodes=1)
        with submitit.helpers.clean_env():
            executor = make_executor(workdir / "submitit" / "validation", self.options, **params)
            job = executor.submit(
                validate_job,
                self.config.data.val_manifest,
                str(path),
                str(workdir / "validation.jsonl"),
            )
        log.info("submitted validation of %s as job %s", path.name, job.job_id)


def validate_job(manifest: str, checkpoint: str, out: str) -> dict[str, Any]:
    """Validation job body: score one checkpoint, append it to `out`, update best.pt."""
    import torch

    from sslspeech.training.validation import validate

    device = "cuda" if torch.cuda.is_available() else "cpu"
    path = Path(checkpoint)
    records = validate(manifest, path.parent, out, device=device, only=[path])
    return next(r for r in records if r["checkpoint"] == path.name)


def describe_job(config: TrainConfig, options: SlurmOptions) -> dict[str, Any]:
    """What `submit_training` would submit (for --dry-run)."""
    workdir = Path(config.run.workdir)
    return {
        "executor": options.cluster or "auto (slurm when sbatch is available)",
        "folder": str(workdir / "submitit"),
        "parameters": options.parameters(name=f"train-{workdir.name}"),
        "function": "sslspeech.launch.slurm.TrainingJob(config)",
        "requeue": "on preemption / time limit, resuming from last.pt",
        "validation": (
            "one 1-GPU job per checkpoint"
            if config.run.validation == "job" and config.data.val_manifest
            else config.run.validation
        ),
        "options": asdict(options),
    }


def submit_training(
    config: TrainConfig, options: SlurmOptions, *, apply_config_changes: bool = False
) -> Any:
    """Submit the training job; returns the submitit job."""
    workdir = Path(config.run.workdir)
    params = options.parameters(name=f"train-{workdir.name}")
    executor = make_executor(workdir / "submitit", options, **params)
    job = executor.submit(TrainingJob(config, options, apply_config_changes))
    log.info("submitted training job %s (logs in %s)", job.job_id, workdir / "submitit")
    return job
