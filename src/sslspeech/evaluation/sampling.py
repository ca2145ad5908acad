"""The seeded permutation of polars `shuffle(seed)`, which fastabx's ABX subsampling uses.

polars shuffles `[0, n)` with rand's `SmallRng::seed_from_u64(seed)` (xoshiro256++ seeded by
SplitMix64) and rand 0.9's `SliceRandom::shuffle` (Fisher-Yates with the "increasing uniform"
chooser, which draws one bounded u32 for several consecutive swaps). Reproducing it bit for bit
lets our subsampled ABX keep exactly the tokens fastabx keeps for the same seed.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TypeVar

T = TypeVar("T")

_MASK64 = (1 << 64) - 1
_MASK32 = (1 << 32) - 1


def _rotl(value: int, shift: int) -> int:
    return ((value << shift) | (value >> (64 - shift))) & _MASK64


class _Xoshiro256PlusPlus:
    """xoshiro256++ seeded from a u64 by SplitMix64 (rand's `SmallRng` on 64-bit targets)."""

    def __init__(self, seed: int) -> None:
        state, words = seed & _MASK64, []
        for _ in range(4):
            state = (state + 0x9E3779B97F4A7C15) & _MASK64
            z = state
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
            words.append(z ^ (z >> 31))
        self.s = words

    def next_u64(self) -> int:
        s = self.s
        result = (_rotl((s[0] + s[3]) & _MASK64, 23) + s[0]) & _MASK64
        t = (s[1] << 17) & _MASK64
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = _rotl(s[3], 45)
        return result

    def next_u32(self) -> int:
        return self.next_u64() >> 32  # the high bits: the low ones are weaker

    def below(self, bound: int) -> int:
        """Uniform integer in `[0, bound)`: rand 0.9's single-sample u32 range (Canon's method)."""
        product = self.next_u32() * bound
        result, low = product >> 32, product & _MASK32
        if low > (-bound) & _MASK32:
            carry = (self.next_u32() * bound) >> 32
            result += (low + carry) >> 32
        return result


def _chunk_bound(n: int) -> tuple[int, int]:
    """Largest product `n (n+1) ... (n+k-1)` that fits in a u32, and its number of factors k."""
    product, current = n, n + 1
    while product * current <= _MASK32:
        product *= current
        current += 1
    return product, current - n


@lru_cache(maxsize=4096)
def shuffle_permutation(n: int, seed: int) -> tuple[int, ...]:
    """The order in which polars `Series.shuffle(seed)` puts the elements `0..n-1`."""
    if n < 0 or seed < 0:
        raise ValueError(f"shuffle_permutation needs n >= 0 and seed >= 0, got {n}, {seed}")
    order = list(range(n))
    if n <= 1:
        return tuple(order)
    rng = _Xoshiro256PlusPlus(seed)
    chunk, remaining = 0, 1  # the first index (0) needs no draw
    for i in range(n):
        if remaining == 0:
            bound, remaining = _chunk_bound(i + 1)
            chunk = rng.below(bound)
        remaining -= 1
        if remaining == 0:
            index = chunk
        else:
            index, chunk = chunk % (i + 1), chunk // (i + 1)
        order[i], order[index] = order[index], order[i]
    return tuple(order)


def shuffled_head(values: list[T], size: int | None, seed: int) -> list[T]:
    """`values` shuffled like polars `shuffle(seed)`, then cut to `size` (None: keep all)."""
    permutation = shuffle_permutation(len(values), seed)
    kept = permutation if size is None else permutation[:size]
    return [values[i] for i in kept]
