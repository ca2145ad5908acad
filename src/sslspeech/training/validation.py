"""Validation: the objective's loss on held-out audio, in the loop or over saved checkpoints
(`sslspeech validate MANIFEST CKPT_DIR OUT.jsonl`, which also points `best.pt` at the best)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sslspeech.errors import CheckpointError, SSLSpeechError
from sslspeech.models.cpu_inference import optimize_for_cpu_inference
from sslspeech.models.registry import model_class
from sslspeech.training import checkpoint as ckpt
from sslspeech.training.config import resolve_config
from sslspeech.training.data import Split, build_split, to_device
from sslspeech.training.distributed import resolve_environment
from sslspeech.training.metrics import Meter, read_metrics
from sslspeech.training.objectives import Objective, build_objective
from sslspeech.training.parallelize import autocast
from sslspeech.utils.fileio import append_line

log = logging.getLogger(__name__)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    objective: Objective,
    split: Split,
    device: torch.device,
    dtype: str = "float32",
) -> dict[str, float]:
    """Mean per-frame loss (and the objective's statistics) over `split`, in eval mode.

    In a process group every rank must call it (each evaluates its shard; results are summed).
    """
    was_training = model.training
    model.eval()
    meter = Meter()
    split.set_epoch(0)
    try:
        for batch in split.loader():
            batch = to_device(batch, device)
            with autocast(device, dtype):
                loss = objective(model, batch)
            meter.add(loss.stats)
            meter.add({"loss_sum": loss.total.detach().float(), "loss_count": float(loss.count)})
    finally:
        model.train(was_training)
    return meter.pop()


def validate_checkpoint(
    manifest: str | os.PathLike[str], path: str | os.PathLike[str], device: torch.device
) -> dict[str, Any]:
    """Validation record of one training checkpoint: step, checkpoint name, loss, stats."""
    saved = ckpt.TrainingCheckpoint.load(path)
    config = resolve_config(saved.config)
    model = model_class(saved.model.model_type).from_checkpoint(saved.model)
    model = optimize_for_cpu_inference(model.to(device))
    env = resolve_environment("cpu" if device.type == "cpu" else "cuda", environ={})
    split = build_split(config, model, env, str(manifest), train=False)
    values = evaluate(model, build_objective(config.model.type, model), split, device)
    return {"step": saved.step, "checkpoint": Path(path).name, **values}


def validate(
    manifest: str | os.PathLike[str],
    checkpoint_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    device: str | torch.device = "cpu",
    metric: str = "loss",
    only: Sequence[str | os.PathLike[str]] | None = None,
    split: str = "val",
    update_best: bool = True,
) -> list[dict[str, Any]]:
    """Validate every `step_N.pt` of `checkpoint_dir` (or those in `only`) not yet in `out`
    (JSONL, appended; records named `split`), then point `best.pt` at the lowest `metric`
    (unless `update_best` is off: a set that does not select it). Returns the records of
    `out` for the checkpoints present; a checkpoint that cannot be validated makes it raise
    after the others are done."""
    device = torch.device(device)
    found = ckpt.list_checkpoints(checkpoint_dir)
    if only is not None:
        names = {Path(path).name for path in only}
        found = [(step, path) for step, path in found if path.name in names]
    if not found:
        raise CheckpointError(f"no step_N.pt checkpoint to validate in {checkpoint_dir}")
    out = Path(out)
    done = {record.get("checkpoint") for record in read_metrics(out)}
    failures = []
    for step, path in found:
        if path.name in done:
            continue
        try:
            record = {"split": split, **validate_checkpoint(manifest, path, device)}
        except SSLSpeechError as error:
            log.error("validation of %s failed: %s", path, error)
            failures.append(f"{path.name}: {error}")
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        append_line(out, json.dumps(record) + "\n")
        log.info("step %d: %s=%.4f", step, metric, record.get(metric, float("nan")))
    present = {path.name for _, path in ckpt.list_checkpoints(checkpoint_dir)}
    records = [r for r in read_metrics(out) if r.get("checkpoint") in present]
    scored = [r for r in records if metric in r]
    if scored and update_best:
        best = min(scored, key=lambda r: r[metric])
        directory = ckpt.CheckpointDir(checkpoint_dir, save_every=1)
        directory.update_best(int(best["step"]), metric, float(best[metric]))
    if failures:
        raise CheckpointError("validation failed for " + "; ".join(failures))
    return records
