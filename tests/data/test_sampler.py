"""Bucketed batch sampler: budget, sharding over ranks, determinism, exact mid-epoch resume."""

from __future__ import annotations

import numpy as np
import pytest

from sslspeech.data.sampler import BucketBatchSampler
from sslspeech.errors import ConfigError

SIZES = np.random.default_rng(0).integers(1_000, 50_000, size=503)
BUDGET = 200_000


def make(rank: int = 0, world: int = 1, **kwargs) -> BucketBatchSampler:
    return BucketBatchSampler(
        SIZES, BUDGET, num_buckets=10, seed=3, rank=rank, world_size=world, **kwargs
    )


def test_padded_budget_and_every_item_once() -> None:
    """Each batch's padded size (batch size x longest item) fits the budget; one world covers
    every item exactly once per epoch (drop_last has nothing to drop with world_size 1)."""
    batches = list(make())
    for batch in batches:
        assert len(batch) * SIZES[batch].max() <= BUDGET
    assert sorted(i for b in batches for i in b) == list(range(len(SIZES)))


def test_batches_group_similar_lengths() -> None:
    """Bucketing keeps padding small: padded samples exceed real samples by < 25 %."""
    batches = list(make())
    padded = sum(len(b) * SIZES[b].max() for b in batches)
    assert padded < 1.25 * SIZES.sum()


def test_two_ranks_disjoint_complete_equal() -> None:
    """2 ranks: same batch count, no item on both, together every item not in dropped batches;
    with drop_last=False the union is complete (the padding repeats a batch)."""
    for epoch in (0, 1):
        ranks = [make(r, 2) for r in (0, 1)]
        for sampler in ranks:
            sampler.set_epoch(epoch)
        got = [list(s) for s in ranks]
        assert len(got[0]) == len(got[1]) == len(ranks[0])
        items = [{i for b in batches for i in b} for batches in got]
        assert not items[0] & items[1]
        everything = ranks[0].global_batches(epoch)
        kept = everything[: len(everything) - len(everything) % 2]
        assert items[0] | items[1] == {i for b in kept for i in b}
    padded = [list(make(r, 2, drop_last=False)) for r in (0, 1)]
    assert len(padded[0]) == len(padded[1])
    assert {i for b in padded[0] + padded[1] for i in b} == set(range(len(SIZES)))


def test_deterministic_and_reshuffled_per_epoch() -> None:
    """Same seed and epoch -> same batches; another epoch -> another order and composition."""
    first, again = make(), make()
    assert list(first) == list(again)
    epoch0 = list(first)
    first.set_epoch(1)
    epoch1 = list(first)
    assert epoch0 != epoch1
    assert {tuple(sorted(b)) for b in epoch0} != {tuple(sorted(b)) for b in epoch1}


def test_resume_mid_epoch_yields_exactly_the_rest() -> None:
    """state_dict after k batches, loaded into a fresh sampler: the remaining batches, then the
    next epoch as if never interrupted."""
    for world in (1, 2):
        sampler = make(world - 1, world)
        sampler.set_epoch(4)
        iterator = iter(sampler)
        seen = [next(iterator) for _ in range(7)]
        state = sampler.state_dict()
        assert state["epoch"] == 4 and state["position"] == 7
        fresh = make(world - 1, world)
        fresh.load_state_dict(state)
        fresh.set_epoch(4)  # a training loop calls this on resume: keeps the position
        rest = list(fresh)
        full = make(world - 1, world)
        full.set_epoch(4)
        assert seen + rest == list(full)
        assert list(fresh) == list(full)  # a second pass over the epoch starts from 0
        fresh.set_epoch(5)
        full.set_epoch(5)
        assert list(fresh) == list(full)


def test_position_override_and_mismatched_state() -> None:
    """state_dict(position=k) records what the trainer consumed; incompatible states raise."""
    sampler = make()
    list(sampler)
    assert sampler.state_dict(position=3)["position"] == 3
    with pytest.raises(ConfigError, match="world_size"):
        make(0, 2).load_state_dict(sampler.state_dict())
    with pytest.raises(ConfigError, match="smaller than the longest item"):
        BucketBatchSampler([10, 500], 100)
    with pytest.raises(ConfigError, match="rank 1 gets none"):
        len(BucketBatchSampler([10, 20], 100, num_buckets=1, rank=1, world_size=2))
