"""ABX against fastabx 0.9.0's golden numbers on ../shared/fixtures/abx/synthetic_phones.

Every deterministic score (no subsampling) and every seed-0 subsampled score must be within
1e-4 of fastabx (tolerances of expected.json); our seeded subsampler must keep exactly the
cells fastabx kept (cells/*.jsonl.gz), and scoring those stored cells must give the same score.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from sslspeech.errors import ConfigError, DataError
from sslspeech.evaluation import abx, abx_result
from sslspeech.evaluation.abx import (
    Cell,
    TokenFrames,
    build_cells,
    read_cells_jsonl,
    score_cells,
    subsample_cells,
    token_frames,
)
from sslspeech.evaluation.items import Items

FEATURE_SETS = {"mfcc39_100hz": 100, "fbank40_50hz": 50}
MODES = [("within", "within"), ("across", "within"), ("within", "any"), ("across", "any")]

_TOKENS: dict[str, TokenFrames] = {}


def tokens_of(abx_dir: Path, items: Items, feature_set: str) -> TokenFrames:
    """Token frames of one feature set, computed once per test session."""
    if feature_set not in _TOKENS:
        root = abx_dir / f"features_{feature_set}"
        _TOKENS[feature_set] = token_frames(items, root, FEATURE_SETS[feature_set])
    return _TOKENS[feature_set]


def cell_signature(cell: Cell) -> tuple[Any, ...]:
    return (cell.phone_a, cell.phone_b, cell.speaker, cell.context, cell.speaker_x,
            cell.a, cell.b, cell.x)  # fmt: skip


@pytest.mark.parametrize("feature_set", FEATURE_SETS)
@pytest.mark.parametrize(("speaker", "context"), MODES)
def test_matches_fastabx(
    abx_dir: Path,
    abx_items: Items,
    abx_expected: dict[str, Any],
    feature_set: str,
    speaker: str,
    context: str,
) -> None:
    """Deterministic and seed-0 subsampled scores, cell and triplet counts, stored cells."""
    expected = abx_expected["scores"][feature_set][f"speaker-{speaker}/context-{context}"]
    tokens = tokens_of(abx_dir, abx_items, feature_set)
    cells = build_cells(abx_items, speaker=speaker, context=context)  # type: ignore[arg-type]

    full = score_cells(cells, tokens, context=context)  # type: ignore[arg-type]
    deterministic = expected["deterministic"]
    assert (full.n_cells, full.n_triplets) == (
        deterministic["n_cells"],
        deterministic["n_triplets"],
    )
    assert abs(full.score - deterministic["score"]) <= deterministic["tolerance_abs"]

    subsampled = expected["zerospeech_subsampled"]
    ours = subsample_cells(cells, 10, 5 if speaker == "across" else None, seed=0)
    stored = read_cells_jsonl(abx_dir / subsampled["cells_file"], context=context)  # type: ignore[arg-type]
    assert Counter(map(cell_signature, ours)) == Counter(map(cell_signature, stored))
    result = score_cells(stored, tokens, context=context)  # type: ignore[arg-type]
    assert (result.n_cells, result.n_triplets) == (subsampled["n_cells"], subsampled["n_triplets"])
    tolerance = subsampled["tolerance_abs_when_scoring_cells_file"]
    assert abs(result.score - subsampled["score"]) <= tolerance


def test_public_api_path_and_mapping(abx_dir: Path, abx_expected: dict[str, Any]) -> None:
    """`abx(item, features, frequency, ...)` on a directory and on an in-memory mapping, with
    the default ZeroSpeech subsampling and with None (deterministic)."""
    expected = abx_expected["scores"]["fbank40_50hz"]["speaker-within/context-within"]
    item, root = abx_dir / "phones.item", abx_dir / "features_fbank40_50hz"
    score = abx(item, root, 50, device="cpu")
    assert abs(score - expected["zerospeech_subsampled"]["score"]) <= 1e-4
    mapping = {path.stem: torch.load(path, weights_only=True) for path in root.glob("*.pt")}
    numpy_mapping = {key: value.numpy() for key, value in mapping.items()}
    full = abx(item, numpy_mapping, "50", max_size_group=None, max_x_across=None)
    assert abs(full - expected["deterministic"]["score"]) <= 1e-4
    assert abx(item, mapping, 50, max_size_group=None) == full


def test_errors_name_the_problem(abx_dir: Path, tmp_path: Path) -> None:
    """Missing files, too-short features, empty tokens and bad settings raise clear errors."""
    item = abx_dir / "phones.item"
    features = {"f1_s00": np.zeros((10, 4), dtype=np.float32)}
    with pytest.raises(DataError, match="have no features"):
        abx(item, features, 50)
    short = tmp_path / "short.item"
    short.write_text(
        "#file onset offset #phone prev-phone next-phone speaker\n"
        "u 0.0 0.5 a x y s\nu 0.5 0.9 b x y s\nu 1.0 1.0 a x y s\n"
    )
    with pytest.raises(DataError, match="no frame"):
        abx(short, {"u": np.ones((100, 3))}, 50)
    short.write_text("#file onset offset #phone prev-phone next-phone speaker\nu 0.0 0.5 a x y s\n")
    with pytest.raises(DataError, match="needs frames"):
        abx(short, {"u": np.ones((10, 3))}, 50)
    with pytest.raises(ConfigError, match="speaker"):
        abx(item, features, 50, speaker="between")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="max_size_group"):
        abx(item, features, 50, max_size_group=1)


def test_tiny_hand_made_task() -> None:
    """Two speakers, two phones: features that separate the phones perfectly give 0 error,
    constant features give 0.5 (every triplet a tie)."""
    lines = ["#file onset offset #phone prev-phone next-phone speaker"]
    features: dict[str, np.ndarray] = {}
    for speaker in ("s1", "s2"):
        for k in range(3):
            fileid = f"{speaker}_{k}"
            lines += [f"{fileid} 0.0 0.1 a x y {speaker}", f"{fileid} 0.1 0.2 b x y {speaker}"]
            frames = np.zeros((20, 2), dtype=np.float32)
            frames[:10, 0] = 1 + k
            frames[10:, 1] = 1 + k
            features[fileid] = frames
    items = Items(*_columns(lines), source="hand-made")
    for speaker, context in MODES:
        result = abx_result(items, features, 100, speaker=speaker, context=context)  # type: ignore[arg-type]
        assert result.score == 0.0 and result.n_cells > 0
    constant = {key: np.ones_like(value) for key, value in features.items()}
    assert abx(items, constant, 100, speaker="across") == 0.5


def _columns(lines: list[str]) -> list[list[Any]]:
    from decimal import Decimal

    rows = [line.split() for line in lines[1:]]
    columns = [list(column) for column in zip(*rows, strict=True)]
    columns[1] = [Decimal(v) for v in columns[1]]
    columns[2] = [Decimal(v) for v in columns[2]]
    return columns


def test_max_x_across_keeps_shuffled_speakers() -> None:
    """Across speaker with 7 speakers: each (pa, pb, s) group keeps 5 of its 6 X speakers,
    those first in the seeded shuffle of the X speakers in order of appearance."""
    from sslspeech.evaluation.sampling import shuffled_head

    lines = ["#file onset offset #phone prev-phone next-phone speaker"]
    speakers = [f"s{k}" for k in range(7)]
    for spk in speakers:
        lines += [f"{spk}_0 0.0 0.1 a x y {spk}", f"{spk}_0 0.1 0.2 b x y {spk}"]
    items = Items(*_columns(lines), source="hand-made")
    cells = build_cells(items, speaker="across", context="any")
    kept = subsample_cells(cells, None, 5, seed=0)
    assert len(cells) == 2 * 7 * 6 and len(kept) == 2 * 7 * 5
    for spk in speakers:
        others = [s for s in speakers if s != spk]
        chosen = {c.speaker_x for c in kept if c.speaker == spk and c.phone_a == "a"}
        assert chosen == set(shuffled_head(others, 5, 0))


def test_reads_our_feature_store(
    abx_dir: Path, abx_expected: dict[str, Any], tmp_path: Path
) -> None:
    """The fixture's features written into our sharded store (2 shards) give the same score."""
    from sslspeech.features.store import StoreWriter, write_store_meta

    root = abx_dir / "features_fbank40_50hz"
    paths = sorted(root.glob("*.pt"))
    for shard in range(2):
        with StoreWriter(tmp_path / "store", shard, 2) as writer:
            for path in paths[shard::2]:
                writer.add(path.stem, torch.load(path, weights_only=True))
    write_store_meta(tmp_path / "store", {"num_shards": 2, "frame_rate": 50})
    expected = abx_expected["scores"]["fbank40_50hz"]["speaker-within/context-within"]
    score = abx(abx_dir / "phones.item", tmp_path / "store", 50)
    assert abs(score - expected["zerospeech_subsampled"]["score"]) <= 1e-4
