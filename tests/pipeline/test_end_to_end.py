"""A reduced two-iteration HuBERT pipeline, end to end through the command line: once straight
through, once SIGKILLed in the middle of a training stage and rerun; both give the same files.
Also `pipeline status` on the interrupted and finished runs, and the report."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sslspeech.pipeline.state import read_state

pytestmark = pytest.mark.slow

TRAIN = """
[run]
workdir = "unused"
seed = 0
max_steps = 20
validation = "none"
device = "cpu"
[data]
manifest = "unused.csv"
max_sample_size = 16000
min_sample_size = 4000
max_batch_samples = 64000
num_workers = 0
[masking]
mask_prob = 0.5
mask_length = 4
min_masks = 1
[model]
type = "hubert_pretrain"
extractor_conv_layers = [
  [16, 10, 5], [16, 3, 2], [16, 3, 2], [16, 3, 2], [16, 3, 2], [16, 2, 2], [16, 2, 2]
]
embed_dim = 32
ffn_dim = 64
num_layers = 2
num_heads = 2
pos_conv_kernel = 8
pos_conv_groups = 4
# the encoder ends here
num_classes = 8
final_dim = 16
layer_drop = 0.0
pred_nomask_weight = 1.0
[optim]
lr = 1e-3
[schedule]
warmup_steps = 5
[checkpoint]
save_every = 5
keep_last = -1
[logging]
log_every = 5
"""

RECIPE = """
kind = "hubert"
iterations = 2
[corpus]
synthetic = true
speakers = 2
utterances = 4
val_fraction = 0.25
[mfcc]
k = 8
[units]
k = 8
[it1]
config = "train.toml"
[it2]
config = "train.toml"
[abx]
context = "any"
"""

# Files whose content must not depend on whether the run was interrupted.
FINAL_FILES = (
    "manifests/all.csv",
    "mfcc/abx.json",
    "mfcc/units.jsonl",
    "mfcc/quality.json",
    "it1/validation.jsonl",
    "it1/abx.json",
    "it1/units.jsonl",
    "it2/labels/train.csv",
    "it2/abx.json",
)


def sslspeech(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "sslspeech", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,
    )


def finish(process: subprocess.Popen, timeout: float = 240) -> str:
    out, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, out[-3000:]
    return out


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("recipe")
    (folder / "train.toml").write_text(TRAIN)
    (folder / "recipe.toml").write_text(RECIPE)
    return folder / "recipe.toml"


@pytest.fixture(scope="module")
def straight_run(recipe) -> Path:
    run = recipe.parent / "straight"
    finish(sslspeech("pipeline", "run", str(recipe), "--run-dir", str(run)))
    return run


def kill_during(stage: str, marker: str, recipe: Path, run: Path) -> None:
    """Start the pipeline and SIGKILL it once `stage` runs and `marker` (a file) exists."""
    process = sslspeech("pipeline", "run", str(recipe), "--run-dir", str(run))
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(
                "the pipeline finished before it could be killed:\n" + process.stdout.read()
            )
        if (run / marker).exists() and read_state(run, stage).status == "running":
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
            return
        time.sleep(0.02)
    process.kill()
    pytest.fail(f"stage {stage} never reached {marker}")


def model_weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return torch.load(checkpoint, map_location="cpu", weights_only=True)["model"]


def test_killed_run_resumes_to_the_same_files(recipe, straight_run):
    run = recipe.parent / "killed"
    kill_during("it1.train", "it1/train/checkpoints/step_5.pt", recipe, run)
    assert read_state(run, "it1.train").status == "running", "killed mid-stage: no end recorded"
    assert read_state(run, "mfcc.transcribe").status == "done"

    status = subprocess.run(
        [sys.executable, "-m", "sslspeech", "pipeline", "status", str(run)],
        capture_output=True,
        text=True,
    )
    assert status.returncode == 1, "a failed (interrupted) stage makes status exit 1"
    rows = {line.split()[0]: line.split()[1] for line in status.stdout.splitlines()[1:-1]}
    assert rows["corpus"] == "done" and rows["it1.train"] == "failed"
    assert rows["it2.abx"] == "pending"
    assert "interrupted" in status.stdout

    log = finish(sslspeech("pipeline", "run", str(recipe), "--run-dir", str(run)))
    assert read_state(run, "it1.train").attempts == 2, "the killed stage was resumed"
    assert read_state(run, "corpus").attempts == 1, "finished stages were skipped"
    assert "stage corpus: up to date, skipped" in log

    for name in FINAL_FILES:
        ours = (run / name).read_text().replace(str(run), "RUN_DIR")
        theirs = (straight_run / name).read_text().replace(str(straight_run), "RUN_DIR")
        assert ours == theirs, name
    for iteration in (1, 2):
        last = f"it{iteration}/train/checkpoints/last.pt"
        ours, theirs = model_weights(run / last), model_weights(straight_run / last)
        assert ours.keys() == theirs.keys()
        for key in ours:
            assert torch.equal(ours[key], theirs[key]), f"{last}: {key}"


def test_status_and_report_of_a_finished_run(straight_run):
    status = subprocess.run(
        [sys.executable, "-m", "sslspeech", "pipeline", "status", str(straight_run)],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = status.stdout.splitlines()
    assert lines[-1] == "19/19 stages done"
    abx_line = next(line for line in lines if line.startswith("it1.abx "))
    assert "best_layer=" in abx_line and "abx=" in abx_line
    assert "best_checkpoint=step_" in next(line for line in lines if "it1.validate" in line)
    assert "pnmi=" in next(line for line in lines if "mfcc.quality" in line)

    results = json.loads((straight_run / "results.json").read_text())
    assert set(results["abx"]) >= {"mfcc", "it1_best", "it2_best", "it1_layers", "it2_layers"}
    assert len(results["abx"]["it1_layers"]) == 2
    assert set(results["best_layer"]) == {"it1", "it2"}
    assert set(results["pnmi"]) == {"it1_targets", "it2_targets"}
    assert results["wall_seconds"] > 0

    out = subprocess.run(
        [sys.executable, "-m", "sslspeech", "report", str(straight_run)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    page = Path(out.strip()).read_text()
    for image in ("loss.png", "abx.png", "quality.png", "heatmap_it1_targets.png"):
        assert f'src="report/{image}"' in page
        assert (straight_run / "report" / image).is_file()


def test_training_stage_as_a_slurm_job_through_submitit_local(recipe, straight_run):
    """The SLURM executor hands a training stage to the training launcher (submitit's local
    cluster here): the job trains the same model as the in-process run."""
    import dataclasses

    from sslspeech.pipeline.executors import SlurmExecutor
    from sslspeech.pipeline.recipe import StageResources, load_recipe
    from sslspeech.pipeline.recipes import build_stages
    from sslspeech.pipeline.runner import Runner

    run = recipe.parent / "slurm"
    stage = next(s for s in build_stages(load_recipe(recipe), run) if s.name == "it1.train")
    labels = straight_run / "it1" / "labels"
    stage = dataclasses.replace(
        stage, inputs={**stage.inputs, "train": labels / "train.csv", "val": labels / "val.csv"}
    )
    executor = SlurmExecutor(
        folder=run / "slurm", resources={"train": StageResources(timeout_min=5)}, cluster="local"
    )
    Runner(run, [stage], executor).run()
    assert read_state(run, "it1.train").results["step"] == 20
    assert any((run / "it1" / "train" / "submitit").glob("*_log.out")), "a submitit job ran"
    last = "it1/train/checkpoints/last.pt"
    ours, theirs = model_weights(run / last), model_weights(straight_run / last)
    assert all(torch.equal(ours[key], theirs[key]) for key in theirs)


def test_demo_command_on_a_finished_run_skips_every_stage(recipe, straight_run):
    """`sslspeech demo` with another recipe and an existing run directory: nothing is redone,
    the report is written, the summary names the learning checks, the run dir comes last."""
    before = {path: path.stat().st_mtime_ns for path in (straight_run / "state").glob("*.json")}
    out = finish(
        sslspeech("demo", "--workdir", str(straight_run), "--recipe", str(recipe)), timeout=120
    )
    lines = out.strip().splitlines()
    assert lines[-1] == str(straight_run)
    assert "it1 best layer beats MFCC on ABX" in out
    assert "units PNMI" in out
    assert (straight_run / "report.html").is_file()
    after = {path: path.stat().st_mtime_ns for path in (straight_run / "state").glob("*.json")}
    assert after == before, "every stage was up to date"


# TRAIN with a tiny SpidR (same encoder) in place of its HuBERT.
SPIDR_TRAIN = (
    TRAIN.split("# the encoder ends here")[0].replace("hubert_pretrain", "spidr")
    + "pos_conv_depth = 2\ncodebook_size = 8\nnum_codebooks = 2\n[optim]"
    + TRAIN.split("[optim]")[1]
)


def test_single_spidr_run_end_to_end(recipe):
    """`kind = "spidr"`: one self-supervised run on the synthetic corpus, then ABX per layer,
    best-layer units and their quality; results.json names the best layer and its PNMI."""
    folder = recipe.parent
    (folder / "spidr.toml").write_text(SPIDR_TRAIN)
    text = recipe.read_text().replace('kind = "hubert"', 'kind = "spidr"')
    text = text.replace("iterations = 2", "iterations = 1").replace('"train.toml"', '"spidr.toml"')
    (folder / "spidr_recipe.toml").write_text(text.replace('[it2]\nconfig = "spidr.toml"\n', ""))
    run = folder / "spidr_run"
    finish(sslspeech("pipeline", "run", str(folder / "spidr_recipe.toml"), "--run-dir", str(run)))
    results = json.loads((run / "results.json").read_text())
    assert len(results["abx"]["it1_layers"]) == 2
    assert results["best_layer"]["it1"] in (1, 2)
    assert 0.0 <= results["pnmi"]["it2_targets"] <= 1.0
    assert (run / "it1" / "train" / "checkpoints" / "step_20.pt").is_file()


def test_recipe_starting_from_a_checkpoint_layer(recipe, straight_run):
    """`[start]` with a checkpoint and a layer: its layer features give the k-means targets of
    it1 (no MFCC stages), and it1 trains on them."""
    folder = recipe.parent
    checkpoint = straight_run / "it1" / "train" / "checkpoints" / "last.pt"
    text = recipe.read_text().replace("iterations = 2", "iterations = 1")
    text = text.replace('[it2]\nconfig = "train.toml"\n', "")
    text += f'[start]\ncheckpoint = "{checkpoint}"\nlayer = 2\n'
    (folder / "start_recipe.toml").write_text(text)
    run = folder / "start_run"
    out = finish(
        sslspeech("pipeline", "run", str(folder / "start_recipe.toml"), "--run-dir", str(run))
    )
    assert "start.features" in out and "mfcc.features" not in out
    labels = (run / "it1" / "labels" / "train.csv").read_text().splitlines()
    assert labels[0].endswith("units") and len(labels) > 1
    assert (run / "it1" / "train" / "checkpoints" / "last.pt").is_file()
