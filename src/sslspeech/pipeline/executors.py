"""Where a stage runs: this process, or a SLURM job submitted with submitit; the shards of a
per-utterance stage run as local processes or as a SLURM job array, and the processes of a
distributed stage (k-means) as local workers or as the tasks of one SLURM job."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sslspeech.errors import ConfigError, SSLSpeechError
from sslspeech.pipeline.recipe import StageResources
from sslspeech.pipeline.stage import Stage, StageContext
from sslspeech.pipeline.state import shard_marker

log = logging.getLogger(__name__)


class LocalExecutor:
    """Runs each stage function in the calling process; the shards of a sharded stage in
    `workers` local processes (default: one per core)."""

    name = "local"

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or os.cpu_count() or 1

    def execute(self, stage: Stage, context: StageContext) -> dict[str, Any]:
        if stage.shard_count is not None:
            from sslspeech.features.extract import run_shards

            jobs = shard_jobs(stage, context)
            run_shards(run_shard, jobs, workers=min(self.workers, len(jobs)))
        return dict(stage.function(context))


def call_stage(stage: Stage, context: StageContext) -> dict[str, Any]:
    """The job body on a SLURM node (module level so that submitit can pickle it); in a job of
    several tasks (a distributed stage), each task gets torchrun's variables first."""
    from sslspeech.launch.slurm import export_torch_distributed

    export_torch_distributed()
    return dict(stage.function(context))


def run_shard(stage: Stage, context: StageContext) -> dict[str, Any]:
    """One shard of a sharded stage (in a local process or an array job); once it is done, its
    marker file says so to `pipeline status`."""
    results = dict(stage.function(context))
    assert context.shard is not None  # set by shard_jobs
    marker = shard_marker(context.run_dir, context.name, context.shard, context.num_shards)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    return results


def shard_jobs(stage: Stage, context: StageContext) -> list[tuple[Stage, StageContext]]:
    """(stage, context of shard i) for every shard not done yet (a resumed stage skips the rest)."""
    return [
        (stage, dataclasses.replace(context, shard=shard))
        for shard in range(context.num_shards)
        if not shard_marker(context.run_dir, context.name, shard, context.num_shards).is_file()
    ]


@dataclass(frozen=True, kw_only=True)
class SlurmExecutor:
    """Submits every stage as a SLURM job (submitit) and waits for it; the driver keeps the state.

    `cluster="local"` runs the jobs as local subprocesses through submitit (tests, no SLURM);
    `cluster="debug"` runs them in this process.
    """

    folder: Path
    resources: Mapping[str, StageResources]
    account: str = ""
    partition: str = ""
    qos: str = ""
    constraint: str = ""
    cluster: str | None = None
    name: str = "slurm"
    extra: Mapping[str, Any] = field(default_factory=dict)

    def execute(self, stage: Stage, context: StageContext) -> dict[str, Any]:
        try:
            import submitit
        except ImportError as error:
            raise ConfigError(
                "the slurm executor needs submitit: pip install 'sslspeech[train]'"
            ) from error
        request = self.resources.get(stage.resources) or StageResources()
        if stage.resources == "train":
            return self._train(context, request)
        executor = self._executor(submitit, stage, request)
        if stage.shard_count is not None:
            return self._array(executor, stage, context, request)
        job = executor.submit(call_stage, stage, context)
        log.info(
            "stage %s: submitted job %s of %d task(s) (%s)",
            stage.name,
            job.job_id,
            job.num_tasks,
            executor.cluster,
        )
        try:
            return dict(job.results()[0])  # every task's (rank 0 first)
        except Exception as error:
            raise SSLSpeechError(
                f"stage {stage.name!r}: job {job.job_id} failed; logs in {self.folder / stage.name}"
                f": {error}"
            ) from error

    def _executor(self, submitit: Any, stage: Stage, request: StageResources) -> Any:
        """A submitit executor with the stage's resources: one task per job, or the processes
        of a distributed stage spread over the nodes (each task with the GPUs it asks for)."""
        executor = submitit.AutoExecutor(folder=self.folder / stage.name, cluster=self.cluster)
        nodes = min(request.nodes, stage.processes)
        tasks = -(-stage.processes // nodes)
        parameters: dict[str, Any] = {
            "name": f"sslspeech-{stage.name}",
            "timeout_min": request.timeout_min,
            "nodes": nodes,
            "tasks_per_node": tasks,
            "cpus_per_task": request.cpus_per_task,
            "mem_gb": request.mem_gb,
        }
        if request.gpus_per_node:
            parameters["gpus_per_node"] = request.gpus_per_node * tasks
        slurm_only = {
            "slurm_account": self.account,
            "slurm_partition": self.partition,
            "slurm_qos": self.qos,
            "slurm_constraint": self.constraint,
        }
        if executor.cluster == "slurm":
            parameters.update({key: value for key, value in slurm_only.items() if value})
            parameters.update(self.extra)
        executor.update_parameters(**parameters)
        return executor

    def _array(
        self, executor: Any, stage: Stage, context: StageContext, request: StageResources
    ) -> dict[str, Any]:
        """The shards not done yet as one job array, waited for; then the finish here."""
        from sslspeech.features.extract import ShardsFailedError, run_shards

        jobs = shard_jobs(stage, context)
        log.info(
            "stage %s: %d of %d shards as a job array (%s)",
            stage.name,
            len(jobs),
            context.num_shards,
            executor.cluster,
        )
        try:
            run_shards(run_shard, jobs, executor=executor, threads=request.cpus_per_task)
        except ShardsFailedError as error:
            raise SSLSpeechError(
                f"stage {stage.name!r}: {error}; logs in {self.folder / stage.name}"
            ) from error
        return dict(stage.function(context))

    def _train(self, context: StageContext, request: StageResources) -> dict[str, Any]:
        """Training goes through the training launcher (DDP tasks, requeue on preemption)."""
        from sslspeech.launch.slurm import SlurmOptions
        from sslspeech.pipeline.tasks import train_model_on_slurm

        options = SlurmOptions(
            account=self.account or None,
            nodes=request.nodes,
            gpus_per_node=max(1, request.gpus_per_node),
            cpus_per_task=request.cpus_per_task,
            time_minutes=request.timeout_min,
            constraint=self.constraint or None,
            qos=self.qos or None,
            partition=self.partition or None,
            cluster=self.cluster,
        )
        return dict(train_model_on_slurm(context, options))
