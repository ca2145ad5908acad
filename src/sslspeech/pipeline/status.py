"""`sslspeech pipeline status`: one row per stage, read from the run directory's state files."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sslspeech.errors import SSLSpeechError
from sslspeech.pipeline.runner import PLAN_FILE, runner_alive
from sslspeech.pipeline.state import read_state, shards_done

# Key results shown in the table, in this order, when a stage reports them.
SHOWN_RESULTS = (
    "best_checkpoint",
    "best_layer",
    "abx",
    "pnmi",
    "val_loss",
    "step",
    "loss",
    "utterances",
    "minutes",
    "processes",
)


@dataclass(frozen=True)
class StageRow:
    """A stage as the status table shows it."""

    name: str
    status: str
    duration: float | None
    results: dict[str, Any]
    note: str = ""
    shards: tuple[int, int] | None = None
    """(done, total) shards of a sharded stage; None for the others."""


def stage_rows(run_dir: Path) -> list[StageRow]:
    """Every planned stage of RUN_DIR with its status (a `running` stage with no live runner
    is reported as failed: it was interrupted)."""
    plan_path = run_dir / PLAN_FILE
    if not plan_path.is_file():
        raise SSLSpeechError(f"{run_dir} is not a pipeline run directory (no {PLAN_FILE})")
    plan = json.loads(plan_path.read_text())
    alive = runner_alive(run_dir)
    rows = []
    for entry in plan["stages"]:
        state = read_state(run_dir, entry["name"])
        status, note = state.status, state.error
        if status == "running" and not alive:
            status, note = "failed", "interrupted (no live runner); rerun to resume"
        shards = None
        if state.shards:
            shards = (shards_done(run_dir, state.name, state.shards), state.shards)
        rows.append(StageRow(state.name, status, state.duration, state.results, note, shards))
    return rows


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{rest:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def format_results(results: dict[str, Any]) -> str:
    parts = []
    for key in SHOWN_RESULTS:
        if key not in results:
            continue
        value = results[key]
        if isinstance(value, float):
            value = f"{value:.4f}"
        elif key == "best_checkpoint":
            value = Path(str(value)).name
        parts.append(f"{key}={value}")
    return " ".join(parts)


def format_table(rows: list[StageRow]) -> str:
    """A plain-text table: stage, status, duration, shards done/total, key results."""
    header = ("stage", "status", "duration", "shards", "results")
    lines = [
        (row.name, row.status, format_duration(row.duration), _shards_cell(row), _results_cell(row))
        for row in rows
    ]
    widths = [max(len(r[i]) for r in [header, *lines]) for i in range(4)]
    out = []
    for cells in [header, *lines]:
        head = "  ".join(cell.ljust(width) for cell, width in zip(cells[:4], widths, strict=True))
        out.append(f"{head}  {cells[4]}".rstrip())
    done = sum(row.status == "done" for row in rows)
    out.append(f"{done}/{len(rows)} stages done")
    return "\n".join(out)


def _shards_cell(row: StageRow) -> str:
    return "-" if row.shards is None else f"{row.shards[0]}/{row.shards[1]}"


def _results_cell(row: StageRow) -> str:
    text = format_results(row.results)
    if row.status == "failed" and row.note:
        note = row.note.splitlines()[-1]
        text = f"{text} {note[:120]}".strip()
    return text
