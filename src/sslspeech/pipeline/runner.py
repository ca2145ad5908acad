"""Run stages in order, skipping those whose outputs are complete and inputs unchanged."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import socket
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from sslspeech.errors import SSLSpeechError
from sslspeech.pipeline.stage import Stage, StageContext
from sslspeech.pipeline.state import (
    StageState,
    fingerprint,
    hash_inputs,
    read_state,
    shard_marker,
    write_state,
)
from sslspeech.utils.fileio import atomic_open
from sslspeech.utils.runlock import hold_lock, lock_held

log = logging.getLogger(__name__)

PLAN_FILE = "pipeline.json"
LOCK_FILE = ".pipeline.lock"


class Executor(Protocol):
    """Runs one stage function somewhere (this process, a SLURM job) and returns its results."""

    @property
    def name(self) -> str: ...

    def execute(self, stage: Stage, context: StageContext) -> dict[str, Any]: ...


class StageFailedError(SSLSpeechError):
    """A stage raised; its state file records the error and a rerun retries it."""


def outputs_of(stages: Sequence[Stage]) -> dict[Path, str]:
    """Map every output path to the stage that writes it; two writers of one path are an error."""
    producers: dict[Path, str] = {}
    for stage in stages:
        for path in stage.outputs.values():
            if path in producers:
                raise SSLSpeechError(
                    f"stages {producers[path]!r} and {stage.name!r} both write {path}"
                )
            producers[path] = stage.name
    return producers


class Runner:
    """Runs a list of stages in RUN_DIR; one runner per directory at a time (a file lock)."""

    def __init__(
        self, run_dir: Path, stages: Sequence[Stage], executor: Executor, device: str = "cpu"
    ) -> None:
        names = [stage.name for stage in stages]
        if len(set(names)) != len(names):
            raise SSLSpeechError(f"duplicate stage names in {names}")
        self.run_dir = run_dir
        self.stages = list(stages)
        self.executor = executor
        self.device = device
        self.producers = outputs_of(self.stages)

    def run(self) -> list[StageState]:
        """Run or skip every stage in order; raises StageFailedError at the first failure."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with self._lock():
            session = {"started": time.time(), "ended": time.time(), "pid": os.getpid()}
            plan = self._write_plan(session)
            states: dict[str, StageState] = {}
            try:
                for stage in self.stages:
                    states[stage.name] = self._run_stage(stage, states)
                    session["ended"] = time.time()
                    self._save_plan(plan)
            finally:
                session["ended"] = time.time()
                self._save_plan(plan)
        return list(states.values())

    def _lock(self) -> contextlib.AbstractContextManager[None]:
        return hold_lock(
            self.run_dir / LOCK_FILE,
            what="pipeline",
            advice="wait for it or stop that process before starting a new one",
        )

    def _write_plan(self, session: dict[str, Any]) -> dict[str, Any]:
        path = self.run_dir / PLAN_FILE
        previous = json.loads(path.read_text()) if path.is_file() else {}
        plan = {
            "stages": [
                {
                    "name": stage.name,
                    "inputs": {k: str(v) for k, v in stage.inputs.items()},
                    "outputs": {k: str(v) for k, v in stage.outputs.items()},
                    "resources": stage.resources,
                }
                for stage in self.stages
            ],
            "executor": self.executor.name,
            "sessions": [*previous.get("sessions", []), session],
        }
        self._save_plan(plan)
        return plan

    def _save_plan(self, plan: dict[str, Any]) -> None:
        with atomic_open(self.run_dir / PLAN_FILE) as handle:
            json.dump(plan, handle, indent=2)
            handle.write("\n")

    def _input_fingerprints(self, stage: Stage, states: dict[str, StageState]) -> dict[str, str]:
        """An upstream output is named by the fingerprint its producer recorded; others are read."""
        result: dict[str, str] = {}
        for key, path in stage.inputs.items():
            producer = self.producers.get(path)
            if producer is not None and producer in states:
                upstream = states[producer]
                output_key = next(k for k, v in self._stage(producer).outputs.items() if v == path)
                result[key] = upstream.outputs.get(output_key, "missing")
            else:
                result[key] = fingerprint(path)
        return result

    def _stage(self, name: str) -> Stage:
        return next(stage for stage in self.stages if stage.name == name)

    def _is_current(self, stage: Stage, state: StageState, input_hash: str) -> bool:
        if state.status != "done" or state.input_hash != input_hash:
            return False
        current = {key: fingerprint(path) for key, path in stage.outputs.items()}
        return current == state.outputs and "missing" not in current.values()

    def _run_stage(self, stage: Stage, states: dict[str, StageState]) -> StageState:
        inputs = self._input_fingerprints(stage, states)
        missing = [str(stage.inputs[k]) for k, v in inputs.items() if v == "missing"]
        if missing:
            raise SSLSpeechError(f"stage {stage.name!r}: missing input(s) {', '.join(missing)}")
        input_hash = hash_inputs(inputs, dict(stage.params))
        state = read_state(self.run_dir, stage.name)
        if self._is_current(stage, state, input_hash):
            log.info("stage %s: up to date, skipped", stage.name)
            return state
        resume = state.status in ("running", "failed") and state.input_hash == input_hash
        if not resume:
            self._clean(stage)
        state = StageState(
            name=stage.name,
            status="running",
            input_hash=input_hash,
            inputs=inputs,
            started=time.time(),
            attempts=state.attempts + 1 if resume else 1,
            host=socket.gethostname(),
        )
        write_state(self.run_dir, state)
        log.info("stage %s: %s", stage.name, "resuming" if resume else "running")
        try:
            context = stage.context(self.run_dir, self.device, resume)
            if stage.shard_count is not None:
                context = dataclasses.replace(context, num_shards=stage.shard_count(context))
                state.shards = context.num_shards
                write_state(self.run_dir, state)
            results = self.executor.execute(stage, context)
        except BaseException as error:
            state.status, state.ended = "failed", time.time()
            state.error = "".join(traceback.format_exception_only(error)).strip()
            write_state(self.run_dir, state)
            if isinstance(error, Exception):
                raise StageFailedError(f"stage {stage.name!r} failed: {state.error}") from error
            raise
        state.outputs = {key: fingerprint(path) for key, path in stage.outputs.items()}
        absent = [str(stage.outputs[k]) for k, v in state.outputs.items() if v == "missing"]
        if absent:
            state.status, state.ended = "failed", time.time()
            state.error = f"outputs not written: {', '.join(absent)}"
            write_state(self.run_dir, state)
            raise StageFailedError(f"stage {stage.name!r}: {state.error}")
        state.results = dict(results)
        state.status, state.ended = "done", time.time()
        write_state(self.run_dir, state)
        log.info("stage %s: done in %.1f s", stage.name, state.duration or 0.0)
        return state

    def _clean(self, stage: Stage) -> None:
        """Remove what a stale attempt left, but only inside the run directory."""
        root = self.run_dir.resolve()
        markers = shard_marker(self.run_dir, stage.name, 0, 1).parent
        for path in (*stage.outputs.values(), *stage.clean, markers):
            resolved = path.resolve()
            if root not in resolved.parents:
                continue  # never delete a user's file outside the run directory
            if resolved.is_dir():
                shutil.rmtree(resolved)
            elif resolved.exists():
                resolved.unlink()


def runner_alive(run_dir: Path) -> bool:
    """True while some process holds the run directory's lock."""
    return lock_held(run_dir / LOCK_FILE)
