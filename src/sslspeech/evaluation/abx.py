"""ABX phone discriminability, as fastabx 0.9.0 `zerospeech_abx` computes it, vectorised in torch.

Pipeline: item file -> token frames (fastabx slicing) -> cells (A, B, X lists of tokens) ->
optional subsampling (polars' seeded shuffle, bit for bit) -> DTW of every distinct token pair
in length-bucketed batches -> per-cell error -> hierarchical means. The full definition is in
../shared/fixtures/abx/synthetic_phones/README.md.

Distances (`distance=`): "angular" on continuous features (the default); for discrete units
"onehot" (unit ids -> one-hot frames -> angular: 0 for equal units, 1/2 otherwise) and
"kl_symmetric" on posteriorgrams (frames of codeword probabilities, e.g. SpidR/DinoSR codebook
predictions): (KL(p||q) + KL(q||p)) / 2, fastabx's "kl_symmetric", as ZeroSpeech scores
posteriorgrams with KL.
"""

from __future__ import annotations

import logging
import math
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from sslspeech.errors import ConfigError, DataError
from sslspeech.evaluation.dtw import normalize_frames, pair_dtw
from sslspeech.evaluation.items import Items, frame_bounds, parse_frequency, read_items
from sslspeech.evaluation.sampling import shuffled_head

log = logging.getLogger(__name__)

Speaker = Literal["within", "across"]
Context = Literal["within", "any"]
Distance = Literal["angular", "onehot", "kl_symmetric"]
DISTANCES = ("angular", "onehot", "kl_symmetric")
PROBABILITY_TOLERANCE = 1e-2  # |row sum - 1| allowed in posteriorgrams (float16 stores)
FeatureSource = str | os.PathLike[str] | Mapping[str, Any]
MIN_A = 2  # a within-speaker cell needs two A tokens (X is another A)


@dataclass(frozen=True)
class Cell:
    """One ABX cell: token (item row) lists and the labels used to average cell errors."""

    a: tuple[int, ...]
    b: tuple[int, ...]
    x: tuple[int, ...]
    phone_a: str
    phone_b: str
    speaker: str
    context: tuple[str, ...] = ()
    speaker_x: str | None = None

    @property
    def symmetric(self) -> bool:
        """Within speaker: X is drawn from A itself (a == x excluded)."""
        return self.speaker_x is None

    @property
    def num_triplets(self) -> int:
        nx = len(self.a) - 1 if self.symmetric else len(self.x)
        return len(self.a) * len(self.b) * nx


class PairTable:
    """DTW results of the token pairs computed so far, keyed by low * n + high (low < high)."""

    def __init__(self) -> None:
        self.keys = np.zeros(0, dtype=np.int64)
        # cost, path length with the lower token on the rows, with the higher one on the rows
        self._values: tuple[Tensor, Tensor, Tensor] | None = None

    def lookup(self, keys: np.ndarray, tokens: TokenFrames) -> tuple[Tensor, Tensor, Tensor]:
        """(cost, path_low, path_high) for sorted unique `keys`; a == b pairs get (+inf, 1, 1)."""
        n = len(tokens.lengths)
        new = keys[(keys // n != keys % n) & ~np.isin(keys, self.keys)]
        if self._values is None or len(new):
            computed = pair_dtw(
                tokens.frames,
                tokens.starts,
                tokens.lengths,
                new // n,
                new % n,
                distance=tokens.distance,
            )
            self._add(new, computed)
        assert self._values is not None
        cost, low, high = self._values
        if not len(self.keys):  # only a == b pairs were asked for
            inf = torch.full((len(keys),), math.inf, device=cost.device, dtype=cost.dtype)
            one = torch.ones(len(keys), device=cost.device, dtype=low.dtype)
            return inf, one, one
        position = np.searchsorted(self.keys, keys).clip(max=len(self.keys) - 1)
        found = torch.as_tensor(self.keys[position] == keys, device=cost.device)
        where = torch.as_tensor(position, device=cost.device)
        return (
            torch.where(found, cost[where], math.inf),
            torch.where(found, low[where], 1),
            torch.where(found, high[where], 1),
        )

    def _add(self, keys: np.ndarray, values: tuple[Tensor, Tensor, Tensor]) -> None:
        if self._values is None:
            self.keys, self._values = keys, values
            return
        merged = np.concatenate([self.keys, keys])
        order = np.argsort(merged, kind="stable")
        index = torch.as_tensor(order, device=values[0].device)
        self.keys = merged[order]
        old = self._values
        self._values = (
            torch.cat([old[0], values[0]])[index],
            torch.cat([old[1], values[1]])[index],
            torch.cat([old[2], values[2]])[index],
        )


@dataclass(frozen=True)
class TokenFrames:
    """Frames of every item token: token t is frames[starts[t] : starts[t] + lengths[t]].

    `pairs` keeps the DTW of every token pair scored so far, so that scoring other cells on the
    same tokens (e.g. subsampled after deterministic) only computes the new pairs. `distance`
    is the DTW frame distance ("angular": frames normalised; "kl_symmetric": probabilities).
    """

    frames: Tensor
    starts: np.ndarray
    lengths: np.ndarray
    distance: str = "angular"
    pairs: PairTable = field(default_factory=PairTable, repr=False, compare=False)


@dataclass(frozen=True)
class AbxResult:
    """The ABX error rate and what it was computed on."""

    score: float
    n_cells: int
    n_triplets: int
    cell_scores: np.ndarray
    frequency: str | None = None  # the frame rate used, in Hz


def abx(
    item: str | os.PathLike[str] | Items,
    features: FeatureSource,
    frequency: int | float | str | Decimal,
    speaker: Speaker = "within",
    context: Context = "within",
    max_size_group: int | None = 10,
    max_x_across: int | None = 5,
    seed: int = 0,
    device: str | torch.device | None = None,
    distance: Distance = "angular",
) -> float:
    """ABX error rate (0 best, 0.5 chance) of `features` on the tokens of an item file.

    `features`: a path readable by `sslspeech.features.open_store`, a units JSONL (`.jsonl`,
    `{"fileid", "units"}`), or a mapping fileid -> (T, D) array/tensor at `frequency` Hz
    (units: (T,) or (T, 1) ids or (T, V) one-hot). `max_size_group` / `max_x_across` = None
    disable the ZeroSpeech subsampling; with them, the same seed keeps the same tokens as
    fastabx. `distance`: see the module docstring.
    """
    return abx_result(
        item,
        features,
        frequency,
        speaker=speaker,
        context=context,
        max_size_group=max_size_group,
        max_x_across=max_x_across,
        seed=seed,
        device=device,
        distance=distance,
    ).score


def abx_result(
    item: str | os.PathLike[str] | Items,
    features: FeatureSource,
    frequency: int | float | str | Decimal,
    *,
    speaker: Speaker = "within",
    context: Context = "within",
    max_size_group: int | None = 10,
    max_x_across: int | None = 5,
    seed: int = 0,
    device: str | torch.device | None = None,
    distance: Distance = "angular",
) -> AbxResult:
    """`abx` with the number of cells and triplets and every cell's error."""
    _check_settings(speaker, context, max_size_group, max_x_across, seed)
    items = item if isinstance(item, Items) else read_items(item)
    tokens = token_frames(items, features, frequency, device=device, distance=distance)
    cells = build_cells(items, speaker=speaker, context=context)
    cells = subsample_cells(cells, max_size_group, max_x_across, seed)
    result = score_cells(cells, tokens, context=context)
    return replace(result, frequency=str(parse_frequency(frequency)))


def _check_settings(
    speaker: str, context: str, max_size_group: int | None, max_x_across: int | None, seed: int
) -> None:
    if speaker not in ("within", "across"):
        raise ConfigError(f"speaker must be 'within' or 'across', got {speaker!r}")
    if context not in ("within", "any"):
        raise ConfigError(f"context must be 'within' or 'any', got {context!r}")
    if max_size_group is not None and max_size_group < MIN_A:
        raise ConfigError(f"max_size_group must be >= 2 or None, got {max_size_group}")
    if max_x_across is not None and max_x_across < 1:
        raise ConfigError(f"max_x_across must be >= 1 or None, got {max_x_across}")
    if not 0 <= seed < 2**64:
        raise ConfigError(f"seed must be in [0, 2**64), got {seed}")


# ---------------------------------------------------------------------------------------------
# Token frames


def _open_features(features: FeatureSource) -> Mapping[str, Any]:
    if isinstance(features, Mapping):
        return features
    if Path(features).suffix == ".km":
        raise DataError(
            f"{features}: .km lines have no fileids; ABX needs a units JSONL "
            '{"fileid", "units"} (transcribe without --km)'
        )
    if Path(features).suffix == ".jsonl":
        from sslspeech.evaluation.quality import read_units

        return {
            key: np.asarray(units, dtype=np.int64) for key, units in read_units(features).items()
        }
    from sslspeech.features import open_store

    return open_store(features)


def token_frames(
    items: Items,
    features: FeatureSource,
    frequency: int | float | str | Decimal,
    *,
    device: str | torch.device | None = None,
    distance: Distance = "angular",
) -> TokenFrames:
    """Slice every token's frames (fastabx rule), prepare them for `distance` (angular:
    L2-normalised; onehot: unit ids -> one-hot, then normalised; kl_symmetric: probability
    rows, checked) and put them on `device`."""
    if distance not in DISTANCES:
        raise ConfigError(f"distance must be one of {DISTANCES}, got {distance!r}")
    store = _open_features(features)
    starts, ends = frame_bounds(items.onsets, items.offsets, frequency)
    empty = np.flatnonzero(ends <= starts)
    if len(empty):
        first = ", ".join(
            f"row {r} ({items.fileids[r]} {items.onsets[r]}-{items.offsets[r]})" for r in empty[:5]
        )
        raise DataError(
            f"{items.source}: {len(empty)} token(s) have no frame at {frequency} Hz (a frame "
            f"counts when its centre (i + 1/2)/f lies in [onset, offset]): {first}. Check the "
            "frequency, or remove these tokens from the item file"
        )
    by_file: dict[str, list[int]] = defaultdict(list)
    for row, fileid in enumerate(items.fileids):
        by_file[fileid].append(row)
    missing = [fileid for fileid in by_file if fileid not in store]
    if missing:
        raise DataError(
            f"{len(missing)} file(s) of {items.source} have no features (first: "
            f"{', '.join(missing[:5])}); {len(by_file) - len(missing)} of {len(by_file)} found"
        )
    pieces: list[Tensor] = [torch.empty(0)] * len(items)
    for fileid, rows in by_file.items():
        array = _file_frames(store[fileid], fileid, distance)
        _check_file_bounds(array, fileid, rows, starts, ends)
        for row in rows:
            pieces[row] = array[starts[row] : ends[row]].clone()  # frees the file's array
    lengths = (ends - starts).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    frames = torch.cat(pieces).to(torch.device(device) if device is not None else "cpu")
    if distance == "kl_symmetric":
        return TokenFrames(frames, offsets, lengths, "kl_symmetric")
    if distance == "onehot":
        frames = torch.nn.functional.one_hot(frames, int(frames.max()) + 1).float()
    return TokenFrames(normalize_frames(frames), offsets, lengths)


def _as_float_tensor(value: Any) -> Tensor:
    if isinstance(value, Tensor):
        return value.detach().to("cpu", torch.float32)
    return torch.tensor(np.asarray(value), dtype=torch.float32)  # a copy: stores are read-only


def _file_frames(value: Any, fileid: str, distance: str) -> Tensor:
    """One file's frames, checked: float [frame, dim], or int64 unit ids [frame] (onehot)."""
    array = _as_float_tensor(value)
    if array.ndim == 1 and distance == "onehot":
        array = array[:, None]
    if array.ndim == 1 and distance == "kl_symmetric":
        raise DataError(
            f"features of {fileid}: unit ids {tuple(array.shape)}, but kl_symmetric scores "
            "posteriorgrams (frames, codewords); use the onehot distance for unit ids"
        )
    if array.ndim != 2:
        raise DataError(f"features of {fileid}: expected (frames, dim), found {tuple(array.shape)}")
    if not torch.isfinite(array).all():
        raise DataError(f"features of {fileid}: non-finite values")
    if distance == "onehot":
        return _unit_ids(array, fileid)
    if distance == "kl_symmetric":
        sums = array.sum(1)
        bad = ((sums - 1).abs() > PROBABILITY_TOLERANCE) | (array < 0).any(1)
        if bool(bad.any()):
            row = int(bad.nonzero()[0, 0])
            raise DataError(
                f"features of {fileid}: kl_symmetric needs posteriorgrams (non-negative rows "
                f"summing to 1); frame {row} sums to {float(sums[row]):.4g} with minimum "
                f"{float(array[row].min()):.4g}. Give codeword probabilities, not logits"
            )
    return array


def _unit_ids(array: Tensor, fileid: str) -> Tensor:
    """[frame] int64 units of [frame, 1] ids or [frame, V] one-hot rows."""
    if array.shape[1] > 1:
        onehot = ((array == 0) | (array == 1)).all(1) & (array.sum(1) == 1)
        if not bool(onehot.all()):
            row = int((~onehot).nonzero()[0, 0])
            raise DataError(
                f"units of {fileid}: frame {row} of the ({array.shape[0]}, {array.shape[1]}) "
                "array is not one-hot; onehot takes unit ids (frames,) / (frames, 1) or one-hot "
                "rows (use kl_symmetric for probabilities, angular for features)"
            )
        return array.argmax(1)
    ids = array[:, 0]
    if bool(((ids < 0) | (ids != ids.round())).any()):
        raise DataError(f"units of {fileid}: unit ids must be non-negative integers")
    return ids.long()


def _check_file_bounds(
    array: Tensor, fileid: str, rows: list[int], starts: np.ndarray, ends: np.ndarray
) -> None:
    for row in rows:
        if starts[row] < 0 or ends[row] > array.size(0):
            raise DataError(
                f"features of {fileid} have {array.size(0)} frames but item row {row} needs "
                f"frames [{starts[row]}, {ends[row]}[ (wrong frequency, or a model that drops "
                "frames at the end: pad the audio or the convolutions)"
            )


# ---------------------------------------------------------------------------------------------
# Cells


def _groups(items: Items, with_context: bool) -> dict[tuple[str, ...], list[int]]:
    """Item rows grouped by (phone, speaker[, prev, next]), in order of first appearance."""
    groups: dict[tuple[str, ...], list[int]] = {}
    for row in range(len(items)):
        key: tuple[str, ...] = (items.phones[row], items.speakers[row])
        if with_context:
            key += (items.prev_phones[row], items.next_phones[row])
        groups.setdefault(key, []).append(row)
    return groups


def build_cells(items: Items, *, speaker: Speaker, context: Context) -> list[Cell]:
    """All cells of the task, as fastabx's `Task` builds them (token lists in item order).

    Within speaker: A = X = tokens of phone pa, B = tokens of pb != pa, same speaker (and same
    context); |A| >= 2. Across: A, B by speaker s, X = tokens of pa by s' != s (same context).
    """
    groups = _groups(items, context == "within")
    by_condition: dict[tuple[str, ...], list[tuple[str, list[int]]]] = defaultdict(list)
    by_phone: dict[tuple[str, ...], list[tuple[str, list[int]]]] = defaultdict(list)
    for (phone, spk, *ctx), rows in groups.items():
        by_condition[(spk, *ctx)].append((phone, rows))
        by_phone[(phone, *ctx)].append((spk, rows))
    cells: list[Cell] = []
    for (spk, *ctx), members in by_condition.items():
        for phone_a, rows_a in members:
            if speaker == "within" and len(rows_a) < MIN_A:
                continue
            a = tuple(rows_a)
            xs = [(s, tuple(r)) for s, r in by_phone[(phone_a, *ctx)] if s != spk]
            for phone_b, rows_b in members:
                if phone_b == phone_a:
                    continue
                b = tuple(rows_b)
                if speaker == "within":
                    cells.append(Cell(a, b, a, phone_a, phone_b, spk, tuple(ctx)))
                    continue
                for spk_x, x in xs:
                    cells.append(Cell(a, b, x, phone_a, phone_b, spk, tuple(ctx), spk_x))
    if not cells:
        raise DataError(f"{items.source}: no ABX cell can be built ({speaker} speaker, {context})")
    return cells


def subsample_cells(
    cells: list[Cell], max_size_group: int | None, max_x_across: int | None, seed: int
) -> list[Cell]:
    """ZeroSpeech subsampling with fastabx's exact seeded choices (polars `shuffle(seed)`).

    Across speaker, at most `max_x_across` X speakers per (pa, pb, context, speaker) group
    (unique in order of appearance, shuffled, first ones kept); then in every cell each of A, B
    and X is shuffled with the same seed (so A and X stay aligned in within cells) and cut to
    `max_size_group`. Unlike fastabx 0.9.0, cells whose labels joined by '-' collide (labels
    containing '-') are not merged.
    """
    if max_x_across is not None:
        cells = _subsample_x_speakers(cells, max_x_across, seed)
    if max_size_group is None:
        return cells
    out = []
    for cell in cells:
        a = tuple(shuffled_head(list(cell.a), max_size_group, seed))
        b = tuple(shuffled_head(list(cell.b), max_size_group, seed))
        x = a if cell.symmetric else tuple(shuffled_head(list(cell.x), max_size_group, seed))
        out.append(
            Cell(a, b, x, cell.phone_a, cell.phone_b, cell.speaker, cell.context, cell.speaker_x)
        )
    return out


def _subsample_x_speakers(cells: list[Cell], size: int, seed: int) -> list[Cell]:
    """Across speaker: at most `size` X speakers per (pa, pb, context, speaker) group."""
    if not cells or cells[0].symmetric:
        return cells

    def group(cell: Cell) -> tuple[Any, ...]:
        return (cell.phone_a, cell.phone_b, cell.context, cell.speaker)

    candidates: dict[tuple[Any, ...], list[str | None]] = {}
    for cell in cells:
        speakers = candidates.setdefault(group(cell), [])
        if cell.speaker_x not in speakers:
            speakers.append(cell.speaker_x)
    kept = {key: set(shuffled_head(value, size, seed)) for key, value in candidates.items()}
    return [cell for cell in cells if cell.speaker_x in kept[group(cell)]]


# ---------------------------------------------------------------------------------------------
# Scoring


def score_cells(cells: list[Cell], tokens: TokenFrames, *, context: Context) -> AbxResult:
    """Error of every cell, then fastabx's hierarchical mean (`Score.collapse(levels=...)`)."""
    if not cells:
        raise DataError("no ABX cell to score")
    # Cells share distance matrices (the same X and A lists recur for every B): compute each once.
    registry = _Matrices()
    xa = np.array([registry.add(cell.x, cell.a, cell.symmetric) for cell in cells])
    xb = np.array([registry.add(cell.x, cell.b, False) for cell in cells])
    values = registry.values(tokens)
    log.debug("%d cells: %d distance matrices, %d values", len(cells), registry.count, len(values))
    shapes: dict[tuple[int, int, int, bool], list[int]] = defaultdict(list)
    for index, cell in enumerate(cells):
        shapes[(len(cell.x), len(cell.a), len(cell.b), cell.symmetric)].append(index)
    cell_scores = np.empty(len(cells), dtype=np.float64)
    for (nx, na, nb, symmetric), members in shapes.items():
        dxa = registry.gather(values, xa[members], nx * na).view(len(members), nx, na)
        dxb = registry.gather(values, xb[members], nx * nb).view(len(members), nx, nb)
        cell_scores[members] = _cell_errors(dxa, dxb, symmetric)
    score = collapse(cells, cell_scores, context=context)
    n_triplets = sum(cell.num_triplets for cell in cells)
    return AbxResult(score, len(cells), n_triplets, cell_scores)


class _Matrices:
    """Distinct token-distance matrices (rows = X list, columns = A or B list), stored flat."""

    def __init__(self) -> None:
        self._ids: dict[tuple[tuple[int, ...], tuple[int, ...], bool], int] = {}
        self._offsets: list[int] = [0]

    @property
    def count(self) -> int:
        return len(self._ids)

    def add(self, rows: tuple[int, ...], cols: tuple[int, ...], symmetric: bool) -> int:
        key = (rows, cols, symmetric)
        found = self._ids.get(key)
        if found is None:
            found = self._ids[key] = len(self._ids)
            self._offsets.append(self._offsets[-1] + len(rows) * len(cols))
        return found

    def _pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """Item rows on the DTW lattice's rows / columns for every entry of every matrix.

        In a within-speaker (symmetric) matrix, fastabx computes X_p vs A_q for p < q only, with
        the earlier one on the rows, and mirrors it; (row == col) marks the a == x diagonal.
        """
        lattice_rows, lattice_cols = [], []
        for rows, cols, symmetric in self._ids:
            r, c = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
            if symmetric:
                p = np.arange(len(r))
                lattice_rows.append(r[np.minimum.outer(p, p)].ravel())
                lattice_cols.append(r[np.maximum.outer(p, p)].ravel())
            else:
                lattice_rows.append(np.repeat(r, len(c)))
                lattice_cols.append(np.tile(c, len(r)))
        return np.concatenate(lattice_rows), np.concatenate(lattice_cols)

    def values(self, tokens: TokenFrames) -> Tensor:
        """All matrices' DTW distances, flat; +inf on the excluded diagonal."""
        rows, cols = self._pairs()
        low, high = np.minimum(rows, cols), np.maximum(rows, cols)
        n = len(tokens.lengths)
        keys, inverse = np.unique(low * n + high, return_inverse=True)
        cost, path_low, path_high = tokens.pairs.lookup(keys, tokens)
        inverse_t = torch.as_tensor(inverse.reshape(-1), device=cost.device)
        rows_low = torch.as_tensor(rows == low, device=cost.device)
        path = torch.where(rows_low, path_low[inverse_t], path_high[inverse_t])
        return cost[inverse_t] / path.to(cost.dtype)

    def gather(self, values: Tensor, ids: np.ndarray, size: int) -> Tensor:
        """[len(ids), size] entries of the matrices `ids` (all of `size` entries)."""
        starts = torch.as_tensor(np.asarray(self._offsets)[ids], device=values.device)
        return values[starts.unsqueeze(1) + torch.arange(size, device=values.device)]


def _cell_errors(dxa: Tensor, dxb: Tensor, symmetric: bool) -> np.ndarray:
    """1 - mean over triplets of [d(a,x) < d(b,x)] (+1/2 on ties), for same-shape cells.

    dxa: [cell, x, a] (+inf where a == x), dxb: [cell, x, b].
    """
    _, nx, na = dxa.shape
    nb = dxb.size(2)
    dxb_sorted = dxb.sort(dim=2).values.contiguous()
    below = torch.searchsorted(dxb_sorted, dxa.contiguous(), right=False)
    at_most = torch.searchsorted(dxb_sorted, dxa.contiguous(), right=True)
    # twice the number of correct triplets: 2 per b farther than a, 1 per tie
    twice = (2 * nb - below - at_most).masked_fill(torch.isinf(dxa), 0)
    correct = twice.sum(dim=(1, 2)).double().cpu().numpy() / 2
    total = na * nb * (nx - 1 if symmetric else nx)
    # fastabx stores each cell's error as float32
    return (1 - correct / total).astype(np.float32).astype(np.float64)


def collapse(cells: list[Cell], cell_scores: np.ndarray, *, context: Context) -> float:
    """fastabx `Score.collapse`: context within: mean over (pa, pb, speaker), then over
    speakers, then over (pa, pb); context any: mean over (pa, pb), then over (pa, pb)."""
    if context == "within":
        by_speaker = _mean_by(((c.phone_a, c.phone_b, c.speaker) for c in cells), cell_scores)
        level = _mean_by((key[:2] for key in by_speaker), np.array(list(by_speaker.values())))
    else:
        level = _mean_by(((c.phone_a, c.phone_b) for c in cells), cell_scores)
    return float(np.mean(list(level.values())))


def _mean_by(keys: Iterable[tuple[str, ...]], values: np.ndarray) -> dict[tuple[str, ...], float]:
    sums: dict[tuple[str, ...], list[float]] = {}
    for key, value in zip(keys, values, strict=True):
        entry = sums.setdefault(key, [0.0, 0.0])
        entry[0] += float(value)
        entry[1] += 1
    return {key: total / count for key, (total, count) in sums.items()}


def read_cells_jsonl(path: str | os.PathLike[str], *, context: Context) -> list[Cell]:
    """Cells written as JSON lines (fastabx's cell table: labels + index_a/index_b/index_x)."""
    import gzip
    import json

    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    cells = []
    with opener(path, "rt") as handle:
        for number, line in enumerate(handle, start=1):
            record = json.loads(line)
            try:
                ctx = (record["prev-phone"], record["next-phone"]) if context == "within" else ()
                cells.append(
                    Cell(
                        tuple(record["index_a"]),
                        tuple(record["index_b"]),
                        tuple(record["index_x"]),
                        record["#phone"],
                        record["#phone_b"],
                        record["speaker"],
                        ctx,
                        record.get("speaker_x"),
                    )
                )
            except KeyError as error:
                raise DataError(f"{path}:{number}: missing key {error}") from None
    return cells
