"""Where a stage runs: this process, or a SLURM job submitted with submitit."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sslspeech.errors import ConfigError, SSLSpeechError
from sslspeech.pipeline.recipe import StageResources
from sslspeech.pipeline.stage import Stage, StageContext

log = logging.getLogger(__name__)


class LocalExecutor:
    """Runs each stage function in the calling process."""

    name = "local"

    def execute(self, stage: Stage, context: StageContext) -> dict[str, Any]:
        return dict(stage.function(context))


def call_stage(stage: Stage, context: StageContext) -> dict[str, Any]:
    """The job body on a SLURM node (module level so that submitit can pickle it)."""
    return dict(stage.function(context))


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
        executor = submitit.AutoExecutor(folder=self.folder / stage.name, cluster=self.cluster)
        parameters: dict[str, Any] = {
            "name": f"sslspeech-{stage.name}",
            "timeout_min": request.timeout_min,
            "nodes": request.nodes,
            "tasks_per_node": 1,
            "cpus_per_task": request.cpus_per_task,
            "mem_gb": request.mem_gb,
        }
        if request.gpus_per_node:
            parameters["gpus_per_node"] = request.gpus_per_node
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
        job = executor.submit(call_stage, stage, context)
        log.info("stage %s: submitted job %s (%s)", stage.name, job.job_id, executor.cluster)
        try:
            return dict(job.result())
        except Exception as error:
            raise SSLSpeechError(
                f"stage {stage.name!r}: job {job.job_id} failed; logs in {self.folder / stage.name}"
                f": {error}"
            ) from error

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
