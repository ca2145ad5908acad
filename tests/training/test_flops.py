"""FLOPs per audio-second counted once per run, the GPU peak table, MFU in the metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from sslspeech.training import flops
from sslspeech.training.config import load_config
from sslspeech.training.metrics import read_metrics
from sslspeech.training.trainer import train
from tests.training.conftest import CONFIGS, single_thread, small_run


def test_a_linear_layer_costs_its_textbook_flops() -> None:
    """Forward 2·B·I·O plus the weight gradient 2·B·I·O (the input needs none)."""
    layer = nn.Linear(6, 5, bias=False)
    x = torch.randn(4, 6)
    assert flops.count_step_flops(layer, lambda m: m(x).sum()) == 2 * (2 * 4 * 6 * 5)


def test_counting_leaves_the_model_and_the_random_streams_alone() -> None:
    """The count runs on a copy with forked generators: parameters, gradients, buffers and the
    next random draw are what they would have been without it."""
    model = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.5), nn.BatchNorm1d(3))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = torch.get_rng_state()
    flops.count_step_flops(model, lambda m: m(torch.randn(8, 3)).sum())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    expected = torch.rand(3, generator=torch.Generator().set_state(state))
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize(
    ("name", "dtype", "peak"),
    [
        ("NVIDIA H100 80GB HBM3", "bfloat16", 989.0),
        ("NVIDIA H100 PCIe", "bfloat16", 756.0),
        ("NVIDIA GH200 480GB", "float32", 494.0),
        ("NVIDIA A100-SXM4-40GB", "float16", 312.0),
        ("NVIDIA L40", "bfloat16", 181.0),
        ("Some Future GPU", "bfloat16", None),
    ],
)
def test_peak_table(monkeypatch: pytest.MonkeyPatch, name: str, dtype: str, peak: float) -> None:
    """Device names match their longest table key (H100 PCIe is not an H100 SXM, GH200 is not
    an H200); unknown GPUs and CPUs have no peak unless one is given."""
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    assert flops.peak_tflops(torch.device("cuda"), dtype) == peak
    assert flops.peak_tflops(torch.device("cpu"), dtype) is None
    assert flops.peak_tflops(torch.device("cpu"), dtype, override=2.5) == 2.5


def test_metrics_report_tflops_and_mfu(tmp_path: Path, tone_manifest: Path) -> None:
    """A tiny HuBERT run logs TFLOP/s per device and, with `optim.peak_tflops`, the MFU that
    follows from them and the audio throughput."""
    overrides = small_run(
        tmp_path, tone_manifest, "run.max_steps=4", "logging.log_every=2", "optim.peak_tflops=0.5"
    )
    with single_thread():
        train(load_config(CONFIGS / "tiny_hubert.toml", overrides))
    records = [r for r in read_metrics(tmp_path / "metrics.jsonl") if r["split"] == "train"]
    assert len(records) == 2
    for record in records:
        assert record["tflops_per_gpu"] > 0
        assert record["mfu"] == pytest.approx(record["tflops_per_gpu"] / 0.5)


def test_profile_steps_write_a_chrome_trace(tmp_path: Path, tone_manifest: Path) -> None:
    """`run.profile_steps = [1, 3]` writes one Chrome trace JSON of those steps (the optimizer
    steps and model ops are in it) and the run goes on to the end."""
    overrides = small_run(tmp_path, tone_manifest, "run.max_steps=4", "run.profile_steps=[1, 3]")
    with single_thread():
        summary = train(load_config(CONFIGS / "tiny_hubert.toml", overrides))
    assert summary["step"] == 4
    trace = json.loads((tmp_path / "profile" / "rank0_steps1-3.json").read_text())
    names = {event.get("name", "") for event in trace["traceEvents"]}
    assert any("aten::" in name for name in names)
    assert any("Optimizer.step" in name for name in names)


def test_the_stop_flag_is_all_reduced_every_n_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    """With several ranks the stop flag costs one all-reduce every `stop_check_every` steps and
    at checkpoint steps, none in between; alone, the local flag is read every step."""
    from types import SimpleNamespace

    from sslspeech.training import trainer as trainer_module

    asked: list[int] = []
    monkeypatch.setattr(trainer_module, "any_rank", lambda flag, group: asked.append(0) or flag)
    fake = SimpleNamespace(
        cpu_group=object(),
        stop=SimpleNamespace(requested=True),
        config=SimpleNamespace(distributed=SimpleNamespace(stop_check_every=10)),
        state=SimpleNamespace(step=0),
    )
    answers = []
    for step in range(1, 31):
        fake.state.step = step
        answers.append(trainer_module.Trainer.stop_requested(fake, saved=step == 15))  # type: ignore[arg-type]
    assert [s for s, yes in zip(range(1, 31), answers, strict=True) if yes] == [10, 15, 20, 30]
    assert len(asked) == 4
    fake.cpu_group = None
    assert trainer_module.Trainer.stop_requested(fake, saved=False)  # type: ignore[arg-type]
