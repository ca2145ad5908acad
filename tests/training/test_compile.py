"""Compiled training (`run.compile`, inductor): the training forward and backward of every model
is one graph pair (no graph break) that serves batches of 11 distinct lengths without a
recompilation, and its losses equal eager training's. HuBERT's batches are padded (the attention
mask path), DinoSR's and SpidR's cropped to their shortest row as their configs do (the
unmasked, Flash path). A run mixing padded, unpadded and single-row batches takes one graph each:
2 recompilations, the most a run can have on a GPU; on CPU, float sums crossing 4096 elements
can add graphs (see `BATCHES`). bench/compile.py counts them on the tiny configs' own batches.

The models are the smallest the configs allow (one transformer layer, two convs, width 16):
inductor's compile time grows with the number of ops, not with their sizes, and the graph
structure (conv stack, positional conv, masked heads, teacher, codebooks) is the real one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from sslspeech.training.compile import compile_counts
from sslspeech.training.config import load_config
from sslspeech.training.distributed import resolve_environment
from sslspeech.training.trainer import Trainer
from tests.training.conftest import CONFIGS
from tests.training.corpus import tone_utterance

SMALLEST: dict[str, Any] = {
    "model.extractor_conv_layers": [[16, 10, 5], [16, 64, 64]],
    "model.embed_dim": 16,
    "model.ffn_dim": 32,
    "model.num_layers": 1,
    "model.num_heads": 1,
    "model.pos_conv_groups": 1,
}
"""The smallest tiny model (320 samples per frame, as the real stack)."""

MODEL_CHANGES: dict[str, dict[str, Any]] = {
    "hubert": {"model.final_dim": 8},
    "dinosr": {"model.num_codebooks": 1, "model.pos_conv_depth": 2},
    "spidr": {"model.num_codebooks": 1, "model.pos_conv_depth": 2},
}

BATCHES = [[3300 + 331 * step - 500 * row for row in range(2 + step % 2)] for step in range(11)]
"""Samples per row of each batch: 11 distinct longest and shortest rows, 2 or 3 rows. Every
float sum (over the conv outputs, frames, masked frames) stays at most 4096 long: inductor's
CPU code guards on that size (above it sums take its precise accumulation helper), so a batch
crossing it compiles once more on CPU."""

MIXED_BATCHES = [
    *BATCHES[:4],
    [4100, 4100],
    [5300],
    [4700, 4700, 4700],
    *BATCHES[4:],
    [6000],
]
"""`BATCHES` (padded) with unpadded batches (rows of one length) and single rows, 15 lengths."""


def make_trainer(name: str, workdir: Path, manifest: Path, compiled: bool) -> Trainer:
    """The smallest tiny_`name` trainer, compiled with inductor when `compiled`."""
    config = load_config(
        CONFIGS / f"tiny_{name}.toml",
        [
            f"run.workdir={workdir}",
            f"data.manifest={manifest}",
            f"run.compile={str(compiled).lower()}",
            "run.validate_every=0",
            "logging.progress=false",
            "logging.mfu=false",
        ],
        changes={**SMALLEST, **MODEL_CHANGES[name]},
    )
    return Trainer(config, resolve_environment("cpu", {}))


def make_batches(trainer: Trainer, sizes: list[list[int]] = BATCHES) -> list[dict[str, Any]]:
    """Batches of tone utterances of `sizes` (samples per row), collated (masks, frame lists)
    by the trainer's collator."""
    rng = np.random.default_rng(0)
    batches = []
    for step, rows in enumerate(sizes):
        items = []
        for row, samples in enumerate(rows):
            waveform, labels = tone_utterance(rng, samples // 320 + 1)
            index = 10 * step + row
            items.append(
                {
                    "waveform": torch.from_numpy(waveform[:samples]),
                    "labels": torch.tensor(labels[: samples // 320]),
                    "fileid": f"utt{index}",
                    "index": index,
                    "seed": index,
                }
            )
        batches.append(trainer.train_data.collator(items))
    return batches


def train(trainer: Trainer, batches: list[dict[str, Any]]) -> list[float]:
    """One optimizer step per batch (with the objective's after-step update); the losses."""
    losses = []
    for batch in batches:
        trainer.train_step([batch])
        trainer.objective.after_step(trainer.model, trainer.state.step)
        losses.append(trainer.meter.pop()["loss"])
    return losses


@pytest.mark.parametrize("name", ["hubert", "dinosr", "spidr"])
def test_compiled_training_is_one_graph_for_every_length(
    name: str, tone_manifest: Path, tmp_path: Path
) -> None:
    """11 steps of 11 distinct lengths: one dynamo frame compiled (no graph break, no
    recompilation), lowered by inductor into one forward and one backward graph, with the
    losses of eager training."""
    eager = make_trainer(name, tmp_path / "eager", tone_manifest, compiled=False)
    batches = make_batches(eager)
    assert len({batch["waveforms"].shape[1] for batch in batches}) == 11
    padded = eager.config.data.batching == "pad"
    assert all(batch["padded"] == padded for batch in batches)
    expected = train(eager, batches)

    torch.compiler.reset()
    before = compile_counts()
    losses = train(make_trainer(name, tmp_path / "compiled", tone_manifest, True), batches)
    after = compile_counts()
    counts = {key: after[key] - before[key] for key in after}

    assert counts == {"graph_breaks": 0, "compiled_frames": 1, "inductor_graphs": 2}
    assert np.isfinite(losses).all()
    np.testing.assert_allclose(losses, expected, rtol=1e-5)


def test_a_compiled_run_mixing_padded_unpadded_and_single_rows_recompiles_twice(
    tone_manifest: Path, tmp_path: Path
) -> None:
    """HuBERT's padded batching, the worst case: padded and unpadded batches take a graph each
    (attention with and without a mask) and a single row a third (dynamo never traces a size
    of 1 as a symbol): over 15 lengths, 2 recompilations and no more, losses equal to eager."""
    eager = make_trainer("hubert", tmp_path / "eager", tone_manifest, compiled=False)
    batches = make_batches(eager, MIXED_BATCHES)
    assert len({batch["waveforms"].shape[1] for batch in batches}) == 15
    assert sum(batch["padded"] for batch in batches) == len(BATCHES)
    assert sum(len(batch["lengths"]) == 1 for batch in batches) == 2
    expected = train(eager, batches)

    torch.compiler.reset()
    before = compile_counts()
    losses = train(make_trainer("hubert", tmp_path / "compiled", tone_manifest, True), batches)
    after = compile_counts()
    counts = {key: after[key] - before[key] for key in after}

    assert counts == {"graph_breaks": 0, "compiled_frames": 3, "inductor_graphs": 6}
    np.testing.assert_allclose(losses, expected, rtol=1e-5)
