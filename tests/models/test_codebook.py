"""Online codebooks, prediction heads, loss and EMA schedules on small hand-made data."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import distributed
from torch.nn import functional as F

from sslspeech.models.codebook import (
    OnlineCodebooks,
    PredictionHeads,
    masked_prediction_loss,
    perplexities,
)
from sslspeech.models.ema import dinosr_ema_decay, ema_update_, spidr_ema_decay


def _codebooks(seed: int = 0, k: int = 3, v: int = 5, d: int = 4) -> OnlineCodebooks:
    torch.manual_seed(seed)
    codebooks = OnlineCodebooks(k, v, d, decay=0.9)
    codebooks.counts.uniform_(0.5, 4.0)
    codebooks.sums.mul_(codebooks.counts.unsqueeze(-1))
    return codebooks


def _update(codebooks: OnlineCodebooks, targets: torch.Tensor, labels: torch.Tensor) -> None:
    """One batch's statistics applied at once (one optimizer step of one micro-batch)."""
    codebooks.accumulate(targets, labels)
    codebooks.apply_update()


def test_assign_is_nearest_centroid() -> None:
    """assign() returns the argmin of the Euclidean distance to sums / counts, per codebook."""
    codebooks = _codebooks()
    targets = torch.randn(3, 50, 4)
    centroids = codebooks.sums / codebooks.counts.unsqueeze(-1)
    expected = torch.cdist(targets, centroids).argmin(-1)
    assert torch.equal(codebooks.assign(targets), expected)


def test_update_matches_per_codeword_rule() -> None:
    """Assigned codewords: x <- d x + (1-d) batch value, for sums and counts; others unchanged."""
    codebooks = _codebooks()
    targets = torch.randn(3, 7, 4)
    labels = torch.tensor([[0, 0, 1, 1, 1, 3, 0]] * 3)
    labels[2] = 4
    sums, counts = codebooks.sums.clone(), codebooks.counts.clone()
    _update(codebooks, targets, labels)
    for k in range(3):
        for j in range(5):
            chosen = labels[k] == j
            if chosen.any():
                want_count = 0.9 * counts[k, j] + 0.1 * chosen.sum()
                want_sum = 0.9 * sums[k, j] + 0.1 * targets[k, chosen].sum(0)
            else:
                want_count, want_sum = counts[k, j], sums[k, j]
            torch.testing.assert_close(codebooks.counts[k, j], want_count)
            torch.testing.assert_close(codebooks.sums[k, j], want_sum)
    assert torch.equal(codebooks.sums[2, :4], sums[2, :4])


def test_accumulated_halves_update_like_the_whole_batch() -> None:
    """Two accumulated micro-batches, applied once, equal one update from the whole batch; the
    codebooks do not move before `apply_update`."""
    accumulated, whole = _codebooks(), _codebooks()
    targets = torch.randn(3, 12, 4, generator=torch.Generator().manual_seed(2))
    labels = whole.assign(targets)
    before = accumulated.sums.clone()
    accumulated.accumulate(targets[:, :5], labels[:, :5])
    accumulated.accumulate(targets[:, 5:], labels[:, 5:])
    assert torch.equal(accumulated.sums, before)
    accumulated.apply_update()
    _update(whole, targets, labels)
    torch.testing.assert_close(accumulated.sums, whole.sums)
    torch.testing.assert_close(accumulated.counts, whole.counts)
    assert accumulated.pending is None


def test_update_with_decay_one_is_a_no_op() -> None:
    """decay >= 1 freezes the codebooks."""
    codebooks = _codebooks()
    codebooks.decay = 1.0
    before = codebooks.state_dict()
    before = {k: v.clone() for k, v in before.items()}
    _update(codebooks, torch.randn(3, 6, 4), torch.zeros(3, 6, dtype=torch.long))
    for key, value in codebooks.state_dict().items():
        assert torch.equal(value, before[key])


def test_heads_shared_and_per_head_inputs_match_linear() -> None:
    """PredictionHeads equals K separate Linear + LogSoftmax, for one shared or K inputs."""
    torch.manual_seed(0)
    heads = PredictionHeads(3, 8, 6)
    shared, per_head = torch.randn(10, 8), torch.randn(3, 10, 8)
    for k in range(3):
        want_shared = F.linear(shared, heads.weight[k], heads.bias[k]).log_softmax(-1)
        want_per_head = F.linear(per_head[k], heads.weight[k], heads.bias[k]).log_softmax(-1)
        torch.testing.assert_close(heads(shared)[k], want_shared)
        torch.testing.assert_close(heads(per_head)[k], want_per_head)


def test_loss_and_perplexities() -> None:
    """Loss = mean over codebooks of -log p(target); perplexity of uniform targets = V."""
    torch.manual_seed(0)
    log_probs = torch.randn(2, 8, 4).log_softmax(-1)
    labels = torch.arange(8).remainder(4).expand(2, 8).contiguous()
    loss, stats = masked_prediction_loss(log_probs, labels)
    want = -(log_probs[0, torch.arange(8), labels[0]] + log_probs[1, torch.arange(8), labels[1]])
    torch.testing.assert_close(loss, want / 2)
    torch.testing.assert_close(stats["target_ppl"], torch.tensor(4.0))
    mean = log_probs.exp().mean(1)
    want_pred = torch.exp2(-(mean * (mean + 1e-8).log2()).sum(-1)).mean()
    torch.testing.assert_close(stats["pred_ppl"], want_pred)
    assert perplexities(torch.tensor([[3.0, 0.0]]), 3).item() == pytest.approx(1.0, abs=1e-6)


def _distributed_worker(rank: int, init_file: str, out_dir: str) -> None:
    distributed.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=2
    )
    try:
        codebooks = _codebooks()
        generator = torch.Generator().manual_seed(1)
        targets = torch.randn(3, 12, 4, generator=generator)
        half = targets[:, rank * 6 : (rank + 1) * 6]
        _update(codebooks, half, codebooks.assign(half))
        ppl = perplexities(torch.tensor([[float(rank == 0), float(rank == 1)]]), 1)
        torch.save(
            {"sums": codebooks.sums, "counts": codebooks.counts, "ppl": ppl},
            Path(out_dir) / f"rank{rank}.pt",
        )
    finally:
        distributed.destroy_process_group()


def test_update_all_reduces_across_ranks(tmp_path: Path) -> None:
    """Two gloo ranks with half a batch each end with the single-process full-batch codebooks."""
    mp.spawn(_distributed_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    single = _codebooks()
    targets = torch.randn(3, 12, 4, generator=torch.Generator().manual_seed(1))
    _update(single, targets, single.assign(targets))
    for rank in range(2):
        result = torch.load(tmp_path / f"rank{rank}.pt")
        torch.testing.assert_close(result["sums"], single.sums)
        torch.testing.assert_close(result["counts"], single.counts)
        torch.testing.assert_close(result["ppl"], torch.tensor([2.0]))


def _fixture_schedule(fixtures_dir: Path, name: str) -> dict[int, float]:
    spec = json.loads((fixtures_dir / "spidr" / name / "fixture.json").read_text())
    return {int(step): value for step, value in spec["ema_decay_at_steps"].items()}


def test_spidr_schedule_matches_reference(fixtures_dir: Path) -> None:
    """exp schedule (timescale 20000, threshold 1e-7) equals the reference to 1e-12."""
    for step, value in _fixture_schedule(fixtures_dir, "tiny_spidr").items():
        assert spidr_ema_decay(step, 0.999, 20000, 1e-7) == pytest.approx(value, abs=1e-12)


def test_dinosr_schedule_matches_reference(fixtures_dir: Path) -> None:
    """Linear schedule to 0.9999 at 30000, 1 from 200000, equals the reference to 1e-12."""
    for name in ("tiny_dinosr", "tiny_dinosr_fairseq_original"):
        for step, value in _fixture_schedule(fixtures_dir, name).items():
            got = dinosr_ema_decay(step, 0.999, 0.9999, 30000, 200000)
            assert got == pytest.approx(value, abs=1e-12)


def test_ema_update_lerps_and_copies_excluded() -> None:
    """Params move by (1 - decay); excluded prefixes and buffers are copied; decay 1: no-op."""
    torch.manual_seed(0)
    student = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3))
    teacher = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3))
    with torch.no_grad():
        for p in teacher.parameters():
            p.normal_()
        student[1].running_mean.fill_(2.0)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    ema_update_(teacher, student, 1.0)
    assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())
    ema_update_(teacher, student, 0.75, exclude=["1."])
    torch.testing.assert_close(
        teacher[0].weight, before["0.weight"] + 0.25 * (student[0].weight - before["0.weight"])
    )
    assert torch.equal(teacher[1].weight, student[1].weight)
    assert torch.equal(teacher[1].running_mean, student[1].running_mean)
    assert math.isclose(spidr_ema_decay(10**6, 0.999, 20000, 1e-7), 1.0)
