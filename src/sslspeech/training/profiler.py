"""`run.profile_steps`: a torch.profiler trace of a few training steps, written as Chrome /
Perfetto JSON (open it in https://ui.perfetto.dev or chrome://tracing)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from sslspeech.training.distributed import DistributedEnvironment

log = logging.getLogger(__name__)


class StepProfiler:
    """Profiles optimizer steps [start, end) of the run (none when `steps` is None): the trace
    goes to WORKDIR/profile/rank{R}_steps{start}-{end}.json."""

    def __init__(
        self, steps: tuple[int, int] | None, workdir: Path, env: DistributedEnvironment
    ) -> None:
        self.steps = steps
        self.path = None
        if steps is not None:
            self.path = workdir / "profile" / f"rank{env.rank}_steps{steps[0]}-{steps[1]}.json"
        self.activities = [ProfilerActivity.CPU]
        if env.device.type == "cuda":
            self.activities.append(ProfilerActivity.CUDA)
        self.active: profile | None = None

    def before_step(self, step: int) -> None:
        """Starts recording when `step` (steps done so far) is the first profiled one."""
        if self.steps is not None and step == self.steps[0] and self.active is None:
            self.active = profile(activities=self.activities, record_shapes=True)
            self.active.__enter__()

    def after_step(self, step: int) -> None:
        """Stops and writes the trace once `step` steps are done and `end` is reached."""
        if self.steps is not None and step >= self.steps[1]:
            self.close()

    def close(self) -> None:
        """Writes what was recorded (also when the run ends or stops inside the window)."""
        if self.active is None or self.path is None:
            return
        if ProfilerActivity.CUDA in self.activities:
            torch.cuda.synchronize()
        self.active.__exit__(None, None, None)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".partial")
        self.active.export_chrome_trace(str(partial))
        partial.replace(self.path)
        self.active = None
        log.info("profiler trace of steps %s written to %s", list(self.steps or ()), self.path)
