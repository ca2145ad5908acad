"""Compiled training (`run.compile`): the training forward of every model is captured by dynamo
without graph breaks and recompiles at most twice over batches of 10+ distinct lengths (the
eager backend: inductor's own guards cost minutes per model here; bench/compile.py runs it)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sslspeech.training.compile import compile_counts, compile_for_training
from sslspeech.training.config import load_config
from sslspeech.training.distributed import resolve_environment
from sslspeech.training.trainer import Trainer
from tests.training.conftest import CONFIGS
from tests.training.corpus import make_tone_corpus


@pytest.fixture(scope="module")
def varied_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """48 tone utterances of 0.3-1.2 s: batches of many padded lengths."""
    folder = tmp_path_factory.mktemp("varied")
    return make_tone_corpus(folder, num_utterances=48, min_frames=15, max_frames=60)


def compiled_run(
    name: str, manifest: Path, workdir: Path, steps: int, backend: str
) -> tuple[dict[str, int], int, list[float]]:
    """Counts (graph breaks, recompilations) of `steps` compiled training steps of
    tiny_`name`, the number of distinct padded lengths, and the losses."""
    config = load_config(
        CONFIGS / f"tiny_{name}.toml",
        [
            f"run.workdir={workdir}",
            f"data.manifest={manifest}",
            "data.max_batch_samples=40000",
            "data.min_sample_size=3200",
            "data.max_sample_size=19200",
            "data.num_buckets=8",
            "run.validate_every=0",
            "logging.progress=false",
        ],
    )
    trainer = Trainer(config, resolve_environment("cpu", {}))
    torch._dynamo.reset()
    before = compile_counts()
    compile_for_training(trainer.model, backend=backend)
    batches = trainer.batches()
    lengths, losses = set(), []
    for _ in range(steps):
        batch = next(batches)
        lengths.add(batch["waveforms"].shape[1])
        trainer.train_step([batch])
        trainer.objective.after_step(trainer.model, trainer.state.step)
        losses.append(trainer.meter.pop()["loss"])
    after = compile_counts()
    counts = {
        "graph_breaks": after["graph_breaks"] - before["graph_breaks"],
        "recompiles": after["compiled_frames"] - before["compiled_frames"] - 1,
    }
    return counts, len(lengths), losses


@pytest.mark.parametrize("name", ["hubert", "dinosr", "spidr"])
def test_training_forward_has_no_graph_breaks(
    name: str, varied_manifest: Path, tmp_path: Path
) -> None:
    """Traced by dynamo (the eager backend: graph capture only), 12 steps of 10+ padded
    lengths give one graph: no graph break, at most 2 recompilations."""
    counts, distinct, losses = compiled_run(name, varied_manifest, tmp_path, 12, "eager")
    assert distinct >= 10
    assert counts == {"graph_breaks": 0, "recompiles": counts["recompiles"]}
    assert counts["recompiles"] <= 2
    assert all(torch.isfinite(torch.tensor(losses)))
