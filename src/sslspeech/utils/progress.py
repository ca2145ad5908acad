"""Progress bars: tqdm on a terminal, silent otherwise (or when tqdm is not installed)."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def progress(
    items: Iterable[T],
    *,
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    quiet: bool = False,
) -> Iterator[T]:
    """Iterate over `items`, drawing a bar on stderr when it is a TTY and `quiet` is False."""
    if quiet or not sys.stderr.isatty():
        yield from items
        return
    try:
        from tqdm import tqdm
    except ImportError:
        yield from items
        return
    yield from tqdm(items, total=total, desc=desc, unit=unit, dynamic_ncols=True)
