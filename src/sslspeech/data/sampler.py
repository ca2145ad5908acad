"""Length-bucketed, sharded, resumable batch sampler.

Each epoch, on every rank alike (same seed, same sizes):

1. items are sorted by size and cut into `num_buckets` buckets of equal count;
2. each bucket is shuffled (seed, epoch) and cut into batches of ``budget // largest item of the
   bucket`` items, so a batch padded to its longest item never exceeds `max_samples_per_batch`
   (``batch_size * max length in batch <= budget``);
3. the batches of all buckets are shuffled together (seed, epoch);
4. the list is made a multiple of `world_size` (``drop_last``: drop the tail; else repeat batches
   from its start) and rank ``r`` takes batches ``r, r + world_size, ...``: every rank gets the
   same number of batches, disjoint ones when nothing is repeated.

`state_dict()` holds ``(epoch, position)``; after `load_state_dict` the next iteration of that
epoch yields exactly the batches from `position` on. With a DataLoader that prefetches
(``num_workers > 0``), the sampler runs ahead of training, over an epoch's end too: pass the
epoch and the number of batches the trainer actually consumed as
``state_dict(epoch=..., position=...)``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch.utils.data

from sslspeech.errors import ConfigError


class BucketBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Batches of dataset indices grouped by length under a padded-samples budget."""

    def __init__(
        self,
        sizes: Sequence[int] | np.ndarray,
        max_samples_per_batch: int,
        *,
        num_buckets: int = 50,
        max_batch_size: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = True,
    ) -> None:
        self.sizes = np.asarray(sizes, dtype=np.int64)
        if self.sizes.ndim != 1 or len(self.sizes) == 0:
            raise ConfigError("the sampler needs a non-empty 1-D list of item sizes")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} is not in [0, world_size={world_size})")
        largest = int(self.sizes.max())
        if max_samples_per_batch < largest:
            raise ConfigError(
                f"max_samples_per_batch={max_samples_per_batch} is smaller than the longest item "
                f"({largest} samples); raise it or crop items (max_samples)"
            )
        if num_buckets < 1 or (max_batch_size is not None and max_batch_size < 1):
            raise ConfigError("num_buckets and max_batch_size must be >= 1")
        self.budget = int(max_samples_per_batch)
        self.max_batch_size = max_batch_size
        self.shuffle, self.seed, self.drop_last = shuffle, int(seed), drop_last
        self.rank, self.world_size = rank, world_size
        order = np.argsort(self.sizes, kind="stable")
        self._buckets = [b for b in np.array_split(order, min(num_buckets, len(order))) if len(b)]
        self.epoch = 0
        self._position = 0
        self._resume_from: int | None = None
        self._cache: tuple[int, list[np.ndarray]] | None = None

    def _bucket_batch_size(self, bucket: np.ndarray) -> int:
        size = max(1, self.budget // max(1, int(self.sizes[bucket].max())))
        return min(size, self.max_batch_size) if self.max_batch_size else size

    def global_batches(self, epoch: int | None = None) -> list[np.ndarray]:
        """Every batch of `epoch` (all ranks), in order, before sharding."""
        epoch = self.epoch if epoch is None else epoch
        rng = np.random.default_rng([self.seed, epoch])
        batches: list[np.ndarray] = []
        for bucket in self._buckets:
            items = rng.permutation(bucket) if self.shuffle else bucket
            step = self._bucket_batch_size(bucket)
            batches.extend(items[start : start + step] for start in range(0, len(items), step))
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def _rank_batches(self) -> list[np.ndarray]:
        if self._cache is not None and self._cache[0] == self.epoch:
            return self._cache[1]
        batches = self.global_batches()
        world = self.world_size
        if self.drop_last:
            batches = batches[: len(batches) - len(batches) % world]
        elif len(batches) % world:
            missing = world - len(batches) % world
            batches = batches + [batches[i % len(batches)] for i in range(missing)]
        mine = batches[self.rank :: world]
        if not mine:
            raise ConfigError(
                f"{len(self.global_batches())} batches for {world} ranks: rank {self.rank} gets "
                "none; lower max_samples_per_batch, use drop_last=False or fewer ranks"
            )
        self._cache = (self.epoch, mine)
        return mine

    def __len__(self) -> int:
        """Batches per rank in an epoch (the same for every epoch and every rank)."""
        return len(self._rank_batches())

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch to iterate; a pending resume point survives only for its own epoch."""
        if epoch != self.epoch:
            self._resume_from = None
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._rank_batches()
        start = self._resume_from or 0
        self._resume_from = None
        self._position = start
        for position in range(start, len(batches)):
            self._position = position + 1
            yield batches[position].tolist()

    def state_dict(self, epoch: int | None = None, position: int | None = None) -> dict[str, Any]:
        """Epoch and position (batches of this epoch already handed out), or the `epoch` and
        `position` training reached when the sampler runs ahead of it."""
        return {
            "epoch": self.epoch if epoch is None else int(epoch),
            "position": self._position if position is None else int(position),
            "seed": self.seed,
            "world_size": self.world_size,
            "num_batches": len(self),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume: the next iteration of `state["epoch"]` starts at `state["position"]`."""
        for key in ("seed", "world_size"):
            if key in state and state[key] != getattr(self, key):
                raise ConfigError(
                    f"sampler state has {key}={state[key]}, this sampler has "
                    f"{getattr(self, key)}; exact resume needs the same {key}"
                )
        self.epoch = int(state["epoch"])
        if "num_batches" in state and state["num_batches"] != len(self):
            raise ConfigError(
                f"sampler state was saved with {state['num_batches']} batches per epoch, this "
                f"sampler has {len(self)}: the dataset, budget or buckets changed"
            )
        self._resume_from = int(state["position"])
        self._position = self._resume_from
