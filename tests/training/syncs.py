"""Counting host-device synchronizations: a dispatch mode that records every op which makes the
host wait for a device value (a scalar read, a data-dependent output shape)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten

# Ops whose result the host must read (scalar reads) or whose output size depends on the data.
SYNC_OPS = {
    aten._local_scalar_dense.default,
    aten.nonzero.default,
    aten.nonzero.out,
    aten.masked_select.default,
    aten.masked_scatter.default,
    aten.unique_consecutive.default,
    aten._unique2.default,
    aten.unique_dim.default,
    aten.repeat_interleave.Tensor,
    aten.is_nonzero.default,
    aten.equal.default,
    aten.allclose.default,
}
# Indexing ops that sync when an index is a boolean mask.
INDEX_OPS = {aten.index.Tensor, aten.index_put.default, aten.index_put_.default}


def _has_bool_index(args: tuple[Any, ...]) -> bool:
    indices = args[1] if len(args) > 1 else ()
    return any(
        isinstance(index, torch.Tensor) and index.dtype in (torch.bool, torch.uint8)
        for index in indices or ()
    )


class SyncCounter(TorchDispatchMode):
    """`with SyncCounter() as counter: ...`; `counter.total`, `counter.ops` (op name -> count)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        if func in SYNC_OPS or (func in INDEX_OPS and _has_bool_index(args)):
            self.ops[str(func)] += 1
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        """Synchronizations counted so far."""
        return sum(self.ops.values())
