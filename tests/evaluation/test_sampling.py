"""The polars `shuffle(seed)` permutation that fastabx's subsampling relies on."""

from __future__ import annotations

import gzip
import json
from collections import defaultdict
from pathlib import Path

from sslspeech.evaluation.items import Items
from sslspeech.evaluation.sampling import shuffle_permutation, shuffled_head


def _observed_permutations(abx_dir: Path, items: Items) -> dict[int, set[tuple[int, ...]]]:
    """Read off the permutation of every list of the stored cells: position of each kept token
    in its full group (item order), for each group size."""
    groups: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for row in range(len(items)):
        key = (items.phones[row], items.speakers[row])
        groups[key].append(row)
        groups[(*key, items.prev_phones[row], items.next_phones[row])].append(row)
    seen: dict[int, set[tuple[int, ...]]] = defaultdict(set)
    for path in sorted((abx_dir / "cells").glob("*.jsonl.gz")):
        with gzip.open(path, "rt") as handle:
            for line in handle:
                cell = json.loads(line)
                for column in ("index_a", "index_b", "index_x"):
                    kept = cell[column]
                    first = kept[0]
                    key: tuple[str, ...] = (items.phones[first], items.speakers[first])
                    if "prev-phone" in cell:
                        key += (items.prev_phones[first], items.next_phones[first])
                    group = groups[key]
                    seen[len(group)].add(tuple(group.index(row) for row in kept))
    return seen


def test_matches_fastabx_cells(abx_dir: Path, abx_items: Items) -> None:
    """Every list fastabx kept (seed 0, head 10) is our permutation of its group, for every
    group size present (1 to 35: several u32 draws for the long ones)."""
    seen = _observed_permutations(abx_dir, abx_items)
    assert len(seen) >= 10 and max(seen) > 13
    for size, permutations in seen.items():
        assert permutations == {shuffle_permutation(size, 0)[:10]}, size


def test_is_a_permutation_and_depends_on_seed() -> None:
    """A permutation of range(n) for any seed; seeds give different orders; head cuts."""
    for n in (0, 1, 2, 7, 14, 100, 1000):
        assert sorted(shuffle_permutation(n, 3)) == list(range(n))
    assert shuffle_permutation(50, 0) != shuffle_permutation(50, 1)
    assert shuffled_head([10, 20, 30], 2, 0) == [30, 10]
    assert shuffled_head([10, 20, 30], None, 0) == [30, 10, 20]
