"""Ordered, memory-bounded parallel map over chunks of a (possibly endless) stream."""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of `size` items (the last one shorter)."""
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def ordered_map(
    function: Callable[[list[T]], list[R]],
    items: Iterable[T],
    *,
    workers: int = 1,
    chunk_size: int = 64,
    executor: Executor | None = None,
) -> Iterator[R]:
    """`function` over chunks of `items`, results in input order, at most ~4 chunks per worker
    in flight (the input is consumed lazily, so millions of items never sit in memory).

    `workers <= 1` runs in this process; otherwise a process pool (`function` must be a
    module-level function and the items picklable).
    """
    chunks = chunked(items, chunk_size)
    if workers <= 1 and executor is None:
        for chunk in chunks:
            yield from function(chunk)
        return
    own = executor is None
    pool = executor or ProcessPoolExecutor(max_workers=workers)
    pending: deque[Future[list[R]]] = deque()
    try:
        for chunk in chunks:
            pending.append(pool.submit(function, chunk))
            if len(pending) >= 4 * max(workers, 1):
                yield from pending.popleft().result()
        while pending:
            yield from pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()
        if own:
            pool.shutdown(wait=True, cancel_futures=True)
