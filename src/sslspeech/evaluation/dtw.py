"""Frame distances (angular; symmetric KL for posteriorgrams) and batched DTW with fastabx's
path-length normalisation, in torch."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

SINGULARITY_EPS = 1e-12
KL_EPS = 1e-6  # fastabx's kl_symmetric: log(p + 1e-6)
DENSE_FACTOR = 4  # all row x column tokens at most this many times the pairs: one matmul


def normalize_frames(frames: Tensor) -> Tensor:
    """L2-normalise rows and append fastabx's "singularity border" coordinate.

    [frame, dim] -> [frame, dim + 1]. A non-zero row becomes (x / |x|, 1e-12); an all-zero row
    becomes (1/sqrt(dim), ..., 1/sqrt(dim), -2e-12), as in fastabx 0.9.0.
    """
    if frames.ndim != 2:
        raise ValueError(f"Expected (frame, dim). Found: {tuple(frames.shape)}")
    norm = frames.norm(dim=1, keepdim=True)
    zero = norm.squeeze(1) == 0
    unit = torch.where(zero.unsqueeze(1), 1.0 / math.sqrt(frames.size(1)), frames / norm)
    border = torch.where(zero, -2 * SINGULARITY_EPS, SINGULARITY_EPS).to(frames.dtype)
    return torch.cat([unit, border.unsqueeze(1)], dim=1)


def angular_distance(x: Tensor, y: Tensor) -> Tensor:
    """Angular distance `arccos(clamp(u . v, -1, 1)) / pi` (in [0, 1]) of normalised frames.

    [..., n, dim] x [..., m, dim] -> [..., n, m].
    """
    dots = x @ y.mT
    return dots.clamp_(-1, 1).acos_().div_(math.pi)


def kl_symmetric_distance(p: Tensor, q: Tensor) -> Tensor:
    """Symmetric KL divergence (KL(p||q) + KL(q||p)) / 2 of probability frames, in nats, with
    log(x + 1e-6), as fastabx's "kl_symmetric" (ZeroSpeech's distance for posteriorgrams).

    [..., n, dim] x [..., m, dim] -> [..., n, m]. Each row's log is centred first: the same
    value for distributions (rows summing to 1), with less float32 cancellation.
    """
    log_p, log_q = (p + KL_EPS).log(), (q + KL_EPS).log()
    log_p = log_p - log_p.mean(-1, keepdim=True)
    log_q = log_q - log_q.mean(-1, keepdim=True)
    self_p = (p * log_p).sum(-1, keepdim=True)
    self_q = (q * log_q).sum(-1).unsqueeze(-2)
    cross = p @ log_q.mT + log_p @ q.mT
    return 0.5 * (self_p + self_q - cross)


FrameDistance = Callable[[Tensor, Tensor], Tensor]

#: Frame distances of `pair_dtw`, by name.
FRAME_DISTANCES: dict[str, FrameDistance] = {
    "angular": angular_distance,
    "kl_symmetric": kl_symmetric_distance,
}


def _diagonal_index(rows: int, cols: int, device: torch.device) -> Tensor:
    """Flat index of cell (i, k - i) of a [rows, cols] lattice for each anti-diagonal k and row i.

    [rows + cols - 1, rows]; cells outside the lattice point to rows * cols (the +inf slot).
    """
    k = torch.arange(rows + cols - 1, device=device).unsqueeze(1)
    i = torch.arange(rows, device=device).unsqueeze(0)
    j = k - i
    inside = (j >= 0) & (j < cols)
    return torch.where(inside, i * cols + j, rows * cols)


def skew(distances: Tensor) -> Tensor:
    """[pair, R, C] lattices -> [R + C - 1, R, pair]: anti-diagonal k, row i (+inf outside)."""
    batch, R, C = distances.shape
    flat = torch.cat([distances.reshape(batch, R * C).T, distances.new_full((1, batch), math.inf)])
    index = _diagonal_index(R, C, distances.device).view(-1)
    return flat.index_select(0, index).view(R + C - 1, R, batch)


def dtw_lattices(distances: Tensor, cols: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """DTW of a batch of padded lattices [pair, R, C] with `cols` valid columns (see dtw_skewed)."""
    return dtw_skewed(skew(distances), cols)


def dtw_skewed(skewed: Tensor, cols: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """DTW of a batch of frame-distance lattices with R rows each, as fastabx computes it.

    skewed: [K = R + C - 1, R, pair], the distance of cell (i, k - i) (+inf outside the
    lattice; cells past a pair's `cols` valid columns may hold anything). Returns the final
    cumulated cost C[R-1, c-1] and the number of cells of the greedy back-traced path, for the
    lattice (rows = X) and for its transpose (rows = Y). The back-trace from the end goes
    diagonal if C[i-1,j-1] <= C[i,j-1] and <= C[i-1,j], else left if C[i,j-1] <= C[i-1,j],
    else up; its length obeys P[i,j] = 1 + P[chosen predecessor], so it is computed during the
    forward sweep over anti-diagonals and no cost lattice is kept.
    """
    K, R, batch = skewed.shape
    C = K - R + 1
    device, dtype = skewed.device, skewed.dtype
    # Pairs on the last axis, so that a range of rows of an anti-diagonal is contiguous.
    # Buffers hold rows -1..R-1 of one anti-diagonal; row -1 stays +inf (outside the lattice).
    cost = [torch.full((R + 1, batch), math.inf, device=device, dtype=dtype) for _ in range(3)]
    path = [torch.zeros((R + 1, batch), device=device, dtype=torch.int32) for _ in range(3)]
    path_t = [torch.zeros((R + 1, batch), device=device, dtype=torch.int32) for _ in range(3)]
    cost[0][1] = skewed[0, 0]
    path[0][1] = 1
    path_t[0][1] = 1
    # The last row of every anti-diagonal: the final cell (R-1, c-1) is on diagonal R + c - 2.
    last_cost = torch.empty((K, batch), device=device, dtype=dtype)
    last_path = torch.empty((K, batch), device=device, dtype=torch.int32)
    last_path_t = torch.empty((K, batch), device=device, dtype=torch.int32)
    last_cost[0], last_path[0], last_path_t[0] = cost[0][R], path[0][R], path_t[0][R]
    for k in range(1, K):
        # Only rows lo..hi of anti-diagonal k are inside the lattice; the rows a later diagonal
        # reads outside that range are never written, so they stay +inf.
        lo, hi = max(0, k - C + 1), min(k, R - 1)
        new, last, before = cost[k % 3], cost[(k - 1) % 3], cost[(k - 2) % 3]
        up, left, diag = last[lo : hi + 1], last[lo + 1 : hi + 2], before[lo : hi + 1]
        up_or_left = torch.minimum(up, left)
        step = torch.minimum(up_or_left, diag)
        torch.add(skewed[k, lo : hi + 1], step, out=new[lo + 1 : hi + 2])
        take_diag = diag <= up_or_left
        # Ties between left and up: left wins here, up (the transposed lattice's left) there.
        for paths, prefer_left in ((path, left <= up), (path_t, left < up)):
            p_last, p_before = paths[(k - 1) % 3], paths[(k - 2) % 3]
            side = torch.where(prefer_left, p_last[lo + 1 : hi + 2], p_last[lo : hi + 1])
            chosen = torch.where(take_diag, p_before[lo : hi + 1], side)
            torch.add(chosen, 1, out=paths[k % 3][lo + 1 : hi + 2])
        last_cost[k] = new[R]
        last_path[k] = path[k % 3][R]
        last_path_t[k] = path_t[k % 3][R]
    end = (cols + (R - 2)).unsqueeze(0)
    return (
        last_cost.gather(0, end).squeeze(0),
        last_path.gather(0, end).squeeze(0),
        last_path_t.gather(0, end).squeeze(0),
    )


def _length_chunks(rows: np.ndarray, cols: np.ndarray, dim: int, budget: int) -> list[np.ndarray]:
    """Pair indices grouped by equal row count and similar column count, within `budget`."""
    order = np.lexsort((cols, rows))
    combos, first, counts = np.unique(
        np.stack([rows[order], cols[order]], 1), axis=0, return_index=True, return_counts=True
    )
    chunks: list[np.ndarray] = []
    start, chunk_r, chunk_c0, size = 0, -1, 0, 0
    for (r, c), begin, count in zip(combos.tolist(), first.tolist(), counts.tolist(), strict=True):
        per_pair = 4 * r * c + (r + c) * dim  # lattice, skewed copy, frames
        fits = r == chunk_r and c <= chunk_c0 * 1.25 + 2 and (size + count) * per_pair <= budget
        if not fits and begin > start:
            chunks.append(order[start:begin])
            start, size = begin, 0
        if not fits:
            chunk_r, chunk_c0 = r, c
        size += count
        step = max(1, budget // per_pair)
        while size > step:  # one (r, c) class larger than the budget: cut it
            cut = start + step
            chunks.append(order[start:cut])
            start, size = cut, size - step
    if start < len(order):
        chunks.append(order[start:])
    return chunks


def pair_dtw(
    frames: Tensor,
    starts: np.ndarray,
    lengths: np.ndarray,
    first: np.ndarray,
    second: np.ndarray,
    *,
    budget: int | None = None,
    dense_factor: float = DENSE_FACTOR,
    distance: str = "angular",
) -> tuple[Tensor, Tensor, Tensor]:
    """DTW distances of token pairs, both orientations at once.

    frames: [frame, dim] features of all tokens (normalised for "angular", probabilities for
    "kl_symmetric": the `distance`, a key of FRAME_DISTANCES) (token t = frames[starts[t]:
    starts[t] + lengths[t]]); first/second: token ids of each pair. Returns, per pair, the
    final DTW cost, the path length with `first` as rows and the one with `second` as rows
    (float32 costs / int32 lengths, on the device of `frames`). `budget` bounds the number of
    elements of the temporary tensors of one chunk (default 2**24 on CPU, 2**27 on GPU). A
    chunk whose row tokens x column tokens are at most `dense_factor` times its pairs gets its
    frame distances from one matmul; sparser chunks copy each pair's frames.
    """
    device, dim = frames.device, frames.size(1)
    frame_distance = FRAME_DISTANCES[distance]
    if budget is None:
        budget = 1 << 24 if device.type == "cpu" else 1 << 27
    n = len(first)
    out_cost = torch.empty(n, device=device, dtype=frames.dtype)
    out_path = torch.empty(n, device=device, dtype=torch.int32)
    out_path_t = torch.empty(n, device=device, dtype=torch.int32)
    if n == 0:
        return out_cost, out_path, out_path_t
    # The shorter token of each pair goes on the rows: fewer rows per anti-diagonal.
    swap = lengths[first] > lengths[second]
    row_tok = np.where(swap, second, first)
    col_tok = np.where(swap, first, second)
    row_len, col_len = lengths[row_tok], lengths[col_tok]
    starts_t = torch.as_tensor(starts, device=device)
    for chunk in _length_chunks(row_len, col_len, dim, budget):
        rows_u, rows_inv = np.unique(row_tok[chunk], return_inverse=True)
        cols_u, cols_inv = np.unique(col_tok[chunk], return_inverse=True)
        if len(rows_u) * len(cols_u) <= dense_factor * len(chunk):
            order = np.lexsort((cols_inv, rows_inv))  # neighbouring pairs read neighbouring cells
            chunk, rows_inv, cols_inv = chunk[order], rows_inv[order], cols_inv[order]
            skewed = _skewed_dense(
                frames, starts, lengths, (rows_u, rows_inv), (cols_u, cols_inv), frame_distance
            )
        else:
            R, C = int(row_len[chunk].max()), int(col_len[chunk].max())
            x = _gather_tokens(frames, starts_t, row_tok[chunk], row_len[chunk], R)
            y = _gather_tokens(frames, starts_t, col_tok[chunk], col_len[chunk], C)
            skewed = skew(frame_distance(x, y))
        cols_t = torch.as_tensor(col_len[chunk], device=device)
        cost, path, path_t = dtw_skewed(skewed, cols_t)
        where = torch.as_tensor(chunk, device=device)
        swapped = torch.as_tensor(swap[chunk], device=device)
        out_cost[where] = cost
        out_path[where] = torch.where(swapped, path_t, path)
        out_path_t[where] = torch.where(swapped, path, path_t)
    return out_cost, out_path, out_path_t


def _skewed_dense(
    frames: Tensor,
    starts: np.ndarray,
    lengths: np.ndarray,
    rows: tuple[np.ndarray, np.ndarray],
    cols: tuple[np.ndarray, np.ndarray],
    frame_distance: FrameDistance,
) -> Tensor:
    """Skewed lattices [K, R, pair] of pairs (rows_u[rows_inv], cols_u[cols_inv]), read from
    the frame distances of all row tokens x all column tokens (one matmul, no per-pair copy
    of the features). Every row token has R frames.

    In the table, each column token is preceded by R - 1 +inf columns and each row ends with C
    of them, so cell (i, j) of a pair is at a fixed offset + (i + j) * 1 + i * (width - 1):
    j < 0 lands on +inf, j past the token's end on +inf or on frames nobody reads."""
    (rows_u, rows_inv), (cols_u, cols_inv) = rows, cols
    device = frames.device
    R = int(lengths[rows_u[0]])
    col_lengths = lengths[cols_u]
    C = int(col_lengths.max())
    strides = col_lengths + (R - 1)
    gap_offsets = np.concatenate([[0], np.cumsum(strides)[:-1]])
    width = int(strides.sum()) + C
    # frame t of column token v: features starts[v] + t, table column gap_offsets[v] + R - 1 + t
    within = np.arange(int(col_lengths.sum())) - np.repeat(
        np.concatenate([[0], np.cumsum(col_lengths)[:-1]]), col_lengths
    )
    col_frames = np.repeat(starts[cols_u], col_lengths) + within
    table_cols = np.repeat(gap_offsets + (R - 1), col_lengths) + within
    row_frames = (starts[rows_u][:, None] + np.arange(R)).reshape(-1)
    x = frames.index_select(0, torch.as_tensor(row_frames, device=device))
    y = frames.index_select(0, torch.as_tensor(col_frames, device=device))
    table = frames.new_full((len(row_frames), width), math.inf)
    distances = frame_distance(x, y)
    table.index_copy_(1, torch.as_tensor(table_cols, device=device), distances)
    # cell (i, j = k - i) of pair b: row rows_inv[b] * R + i, column gap + R - 1 + k - i
    i = torch.arange(R, device=device).view(-1, 1)
    pair_row = torch.as_tensor(rows_inv * R, device=device).view(1, -1)
    pair_col = torch.as_tensor(gap_offsets[cols_inv] + (R - 1), device=device).view(1, -1)
    base = (pair_row + i) * width + pair_col - i  # [R, pair]
    k = torch.arange(R + C - 1, device=device).view(-1, 1, 1)
    return table.view(-1).take(base.unsqueeze(0) + k)


def _gather_tokens(
    frames: Tensor, starts: Tensor, tokens: np.ndarray, lengths: np.ndarray, width: int
) -> Tensor:
    """[pair, width, dim] frames of `tokens`; frames past a token's end are arbitrary (finite)."""
    device = frames.device
    tok = torch.as_tensor(tokens, device=device)
    length = torch.as_tensor(lengths, device=device)
    offsets = torch.arange(width, device=device)
    valid = offsets.unsqueeze(0) < length.unsqueeze(1)
    index = torch.where(valid, starts[tok].unsqueeze(1) + offsets, 0)
    return frames.index_select(0, index.view(-1)).view(len(tokens), width, frames.size(1))
