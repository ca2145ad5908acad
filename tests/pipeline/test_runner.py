"""The stage runner: skip when unchanged, rerun when inputs change, resume after a failure,
record state files, and the status table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sslspeech.errors import SSLSpeechError
from sslspeech.pipeline.executors import LocalExecutor
from sslspeech.pipeline.runner import Runner, StageFailedError
from sslspeech.pipeline.stage import Stage, StageContext
from sslspeech.pipeline.state import read_state
from sslspeech.pipeline.status import format_table, stage_rows

CALLS: list[str] = []


def double(context: StageContext) -> dict[str, Any]:
    CALLS.append(context.name)
    value = int(context.inputs["source"].read_text()) * 2 + int(context.params.get("add", 0))
    context.outputs["out"].write_text(str(value))
    return {"value": value}


def fail_once(context: StageContext) -> dict[str, Any]:
    CALLS.append(f"{context.name}:resume={context.resume}")
    marker = context.run_dir / "failed_once"
    if not marker.exists():
        marker.write_text("x")
        raise RuntimeError("boom")
    context.outputs["out"].write_text("ok")
    return {"abx": 0.125, "best_layer": 3}


def forget_output(context: StageContext) -> dict[str, Any]:
    return {}


def chain(tmp_path: Path, add: int = 0) -> list[Stage]:
    return [
        Stage(
            name="a",
            function=double,
            inputs={"source": tmp_path / "source.txt"},
            outputs={"out": tmp_path / "run" / "a.txt"},
        ),
        Stage(
            name="b",
            function=double,
            inputs={"source": tmp_path / "run" / "a.txt"},
            outputs={"out": tmp_path / "run" / "b.txt"},
            params={"add": add},
        ),
    ]


@pytest.fixture(autouse=True)
def _clear_calls() -> None:
    CALLS.clear()


def test_runs_then_skips_then_reruns_downstream_of_a_change(tmp_path):
    (tmp_path / "source.txt").write_text("1")
    run = tmp_path / "run"
    Runner(run, chain(tmp_path), LocalExecutor()).run()
    assert (run / "b.txt").read_text() == "4"
    assert CALLS == ["a", "b"]
    state = read_state(run, "b")
    assert state.status == "done" and state.results == {"value": 4}
    assert state.started is not None and state.ended is not None

    Runner(run, chain(tmp_path), LocalExecutor()).run()
    assert CALLS == ["a", "b"], "nothing changed: both stages skipped"

    Runner(run, chain(tmp_path, add=1), LocalExecutor()).run()
    assert CALLS == ["a", "b", "b"], "a parameter of b changed: only b reruns"
    assert (run / "b.txt").read_text() == "5"

    (tmp_path / "source.txt").write_text("2")
    Runner(run, chain(tmp_path, add=1), LocalExecutor()).run()
    assert CALLS[3:] == ["a", "b"], "the source changed: everything downstream reruns"
    assert (run / "b.txt").read_text() == "9"

    (run / "b.txt").unlink()
    Runner(run, chain(tmp_path, add=1), LocalExecutor()).run()
    assert CALLS[5:] == ["b"], "a deleted output is recomputed"


def test_failure_is_recorded_and_the_rerun_resumes(tmp_path):
    run = tmp_path / "run"
    stages = [Stage(name="flaky", function=fail_once, outputs={"out": run / "flaky.txt"})]
    with pytest.raises(StageFailedError, match="boom"):
        Runner(run, stages, LocalExecutor()).run()
    state = read_state(run, "flaky")
    assert state.status == "failed" and "boom" in state.error
    assert "failed" in format_table(stage_rows(run))

    Runner(run, stages, LocalExecutor()).run()
    assert CALLS == ["flaky:resume=False", "flaky:resume=True"]
    state = read_state(run, "flaky")
    assert state.status == "done" and state.attempts == 2


def test_missing_output_fails_the_stage(tmp_path):
    run = tmp_path / "run"
    stages = [Stage(name="lazy", function=forget_output, outputs={"out": run / "never.txt"})]
    with pytest.raises(StageFailedError, match="outputs not written"):
        Runner(run, stages, LocalExecutor()).run()


def test_missing_input_is_a_clear_error(tmp_path):
    with pytest.raises(SSLSpeechError, match="missing input"):
        Runner(tmp_path / "run", chain(tmp_path), LocalExecutor()).run()


def test_status_table_lists_every_stage_with_results(tmp_path):
    (tmp_path / "source.txt").write_text("1")
    run = tmp_path / "run"
    stages = [
        *chain(tmp_path),
        Stage(name="flaky", function=fail_once, outputs={"out": run / "flaky.txt"}),
        Stage(name="later", function=double, outputs={"out": run / "later.txt"}),
    ]
    with pytest.raises(StageFailedError):
        Runner(run, stages, LocalExecutor()).run()
    table = format_table(stage_rows(run))
    lines = table.splitlines()
    assert lines[0].split() == ["stage", "status", "duration", "shards", "results"]
    statuses = {line.split()[0]: line.split()[1] for line in lines[1:-1]}
    assert statuses == {"a": "done", "b": "done", "flaky": "failed", "later": "pending"}
    assert lines[-1] == "2/4 stages done"

    Runner(run, stages[:3], LocalExecutor()).run()
    flaky = next(line for line in format_table(stage_rows(run)).splitlines() if "flaky" in line)
    assert "abx=0.1250" in flaky and "best_layer=3" in flaky


def test_interrupted_stage_shows_as_failed(tmp_path):
    (tmp_path / "source.txt").write_text("1")
    run = tmp_path / "run"
    Runner(run, chain(tmp_path), LocalExecutor()).run()
    path = run / "state" / "b.json"
    data = json.loads(path.read_text())
    data.update(status="running", ended=None)
    path.write_text(json.dumps(data))
    row = next(row for row in stage_rows(run) if row.name == "b")
    assert row.status == "failed" and "interrupted" in row.note


def test_slurm_executor_through_submitit_local_jobs(tmp_path):
    """The SLURM path with submitit's local cluster: each stage runs as a separate job process,
    the driver records the states; a second run skips both stages."""
    from sslspeech.pipeline.executors import SlurmExecutor
    from sslspeech.pipeline.recipe import StageResources

    (tmp_path / "source.txt").write_text("3")
    run = tmp_path / "run"
    executor = SlurmExecutor(
        folder=run / "slurm", resources={"cpu": StageResources(timeout_min=5)}, cluster="local"
    )
    Runner(run, chain(tmp_path), executor).run()
    assert (run / "b.txt").read_text() == "12"
    assert CALLS == [], "the stage functions ran in the job processes, not here"
    assert read_state(run, "b").results == {"value": 12}
    assert any((run / "slurm" / "a").glob("*_log.out")), "submitit kept the job logs"
    Runner(run, chain(tmp_path), executor).run()
    assert read_state(run, "b").attempts == 1
