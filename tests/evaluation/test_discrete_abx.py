"""Discrete-unit ABX ("onehot": ids -> one-hot -> angular; "kl_symmetric" on posteriorgrams)
against a brute-force reference written here: float64 frame distances and DTW per token pair,
every triplet of every cell (the continuous ABX's cells, `build_cells`), hierarchical means.

Units and posteriorgrams come from a fixed random projection of the fixture's 50 Hz fbanks, on
the utterances of sentences 4-11 of all 4 speakers (so that the brute force takes ~1 s).
"""

from __future__ import annotations

import copy
import math
from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from sslspeech.errors import DataError
from sslspeech.evaluation import abx_result
from sslspeech.evaluation.abx import build_cells, subsample_cells
from sslspeech.evaluation.items import Items

SENTENCES = {f"s{k:02d}" for k in range(4, 12)}
NUM_UNITS = 12
EPS = 1e-6


@pytest.fixture(scope="module")
def small_items(abx_items: Items) -> Items:
    """The item rows of sentences 4-11 (32 utterances)."""
    keep = [i for i, f in enumerate(abx_items.fileids) if f.split("_")[1] in SENTENCES]
    columns = [
        [column[i] for i in keep]
        for column in (
            abx_items.fileids,
            abx_items.onsets,
            abx_items.offsets,
            abx_items.phones,
            abx_items.prev_phones,
            abx_items.next_phones,
            abx_items.speakers,
        )
    ]
    return Items(*columns, source="sentences 4-11")  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def posteriorgrams(abx_dir: Path, small_items: Items) -> dict[str, np.ndarray]:
    """fileid -> (T, 12) softmax of a fixed random projection of the 50 Hz fbanks."""
    rng = np.random.default_rng(0)
    projection = rng.normal(size=(40, NUM_UNITS)) / 40
    out = {}
    for fileid in dict.fromkeys(small_items.fileids):
        fbank = torch.load(abx_dir / "features_fbank40_50hz" / f"{fileid}.pt").numpy()
        logits = (fbank - fbank.mean(0)) @ projection
        probabilities = np.exp(logits - logits.max(1, keepdims=True))
        out[fileid] = (probabilities / probabilities.sum(1, keepdims=True)).astype(np.float32)
    return out


@pytest.fixture(scope="module")
def units(posteriorgrams: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """fileid -> (T,) unit ids: the argmax of the posteriorgrams."""
    return {key: value.argmax(1) for key, value in posteriorgrams.items()}


# ------------------------------------------------------------------------- brute force


def token_slice(onset: Decimal, offset: Decimal, frequency: int) -> slice:
    """Frames whose centre (i + 1/2) / f lies in [onset, offset] (the fastabx rule)."""
    start = math.ceil(onset * frequency - Decimal("0.5"))
    return slice(start, math.floor(offset * frequency - Decimal("0.5")) + 1)


def onehot_angular(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Angle / pi between one-hot frames of unit ids x [n] and y [m], float64."""
    u, v = np.eye(NUM_UNITS)[x], np.eye(NUM_UNITS)[y]
    return np.arccos(np.clip(u @ v.T, -1, 1)) / np.pi


def kl_symmetric(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """(KL(p||q) + KL(q||p)) / 2 = sum (p - q)(log p - log q) / 2, logs of x + 1e-6, float64."""
    p, q = p.astype(np.float64)[:, None], q.astype(np.float64)[None]
    return 0.5 * ((p - q) * (np.log(p + EPS) - np.log(q + EPS))).sum(-1)


def dtw(distances: np.ndarray) -> float:
    """Cumulated cost / length of the greedy back-traced path (rows = X), as fastabx."""
    rows, cols = distances.shape
    cost = np.full((rows, cols), np.inf)
    for i in range(rows):
        for j in range(cols):
            previous = [cost[i - 1, j] if i else np.inf, cost[i, j - 1] if j else np.inf]
            previous.append(cost[i - 1, j - 1] if i and j else np.inf)
            cost[i, j] = distances[i, j] + (min(previous) if i or j else 0.0)
    i, j, length = rows - 1, cols - 1, 1
    while i or j:
        up = cost[i - 1, j] if i else np.inf
        left = cost[i, j - 1] if j else np.inf
        diagonal = cost[i - 1, j - 1] if i and j else np.inf
        if diagonal <= left and diagonal <= up:
            i, j = i - 1, j - 1
        elif left <= up:
            j -= 1
        else:
            i -= 1
        length += 1
    return float(cost[-1, -1] / length)


def brute_force_abx(
    items: Items, frames: dict[str, np.ndarray], distance: Any, cells: list[Any], context: str
) -> tuple[float, np.ndarray]:
    """Score and cell errors: every triplet (a, b, x), a != x, with [d(a,x) < d(b,x)] + 1/2 on
    ties; means over (pa, pb, speaker) then speakers then (pa, pb) (context any: (pa, pb))."""
    tokens = [
        frames[f][token_slice(on, off, 50)]
        for f, on, off in zip(items.fileids, items.onsets, items.offsets, strict=True)
    ]
    memo: dict[tuple[int, int], float] = {}

    def d(x: int, y: int) -> float:
        if (x, y) not in memo:
            memo[(x, y)] = dtw(distance(tokens[x], tokens[y]))
        return memo[(x, y)]

    errors = []
    for cell in cells:
        correct, total = 0.0, 0
        for x in cell.x:
            for a in cell.a:
                if cell.symmetric and a == x:
                    continue
                for b in cell.b:
                    dax, dbx = d(x, a), d(x, b)
                    correct += 1.0 if dax < dbx else 0.5 if dax == dbx else 0.0
                    total += 1
        errors.append(1 - correct / total)
    groups: dict[Any, list[float]] = defaultdict(list)
    for cell, error in zip(cells, errors, strict=True):
        key = (cell.phone_a, cell.phone_b) + ((cell.speaker,) if context == "within" else ())
        groups[key].append(error)
    level = {key: float(np.mean(v)) for key, v in groups.items()}
    if context == "within":
        by_pair: dict[Any, list[float]] = defaultdict(list)
        for (pa, pb, _), value in level.items():
            by_pair[(pa, pb)].append(value)
        level = {key: float(np.mean(v)) for key, v in by_pair.items()}
    return float(np.mean(list(level.values()))), np.array(errors)


# ------------------------------------------------------------------------- tests

MODES = [("within", "within"), ("across", "any")]


@pytest.mark.parametrize(("speaker", "context"), MODES)
def test_onehot_matches_brute_force(small_items, units, speaker, context):
    """onehot ABX (subsampled, 3 tokens per list) = the brute force, cell by cell, exactly
    (one-hot angular distances are exactly 0 and 1/2 in float32 too)."""
    cells = build_cells(small_items, speaker=speaker, context=context)
    cells = subsample_cells(cells, 3, 2 if speaker == "across" else None, seed=0)
    expected, cell_errors = brute_force_abx(small_items, units, onehot_angular, cells, context)
    result = abx_result(
        small_items,
        units,
        50,
        speaker=speaker,
        context=context,
        max_size_group=3,
        max_x_across=2,
        distance="onehot",
    )
    assert result.n_cells == len(cells)
    np.testing.assert_allclose(result.cell_scores, cell_errors, atol=1e-6)
    assert result.score == pytest.approx(expected, abs=1e-6)
    assert 0 < result.score < 0.5


@pytest.mark.parametrize(("speaker", "context"), MODES)
def test_kl_matches_brute_force(small_items, posteriorgrams, speaker, context):
    """kl_symmetric ABX on posteriorgrams = the float64 brute force within 1e-6 (float32 DTW
    decides every triplet the same way here)."""
    cells = build_cells(small_items, speaker=speaker, context=context)
    cells = subsample_cells(cells, 3, 2 if speaker == "across" else None, seed=0)
    expected, cell_errors = brute_force_abx(
        small_items, posteriorgrams, kl_symmetric, cells, context
    )
    result = abx_result(
        small_items,
        posteriorgrams,
        50,
        speaker=speaker,
        context=context,
        max_size_group=3,
        max_x_across=2,
        distance="kl_symmetric",
    )
    np.testing.assert_allclose(result.cell_scores, cell_errors, atol=1e-6)
    assert result.score == pytest.approx(expected, abs=1e-6)
    assert 0 < result.score < 0.5


def test_unit_sources_agree(small_items, units, tmp_path):
    """The same units as (T,) ids, (T, 1) ids, one-hot rows in a feature store and a units
    JSONL give the same onehot score."""
    import json

    from sslspeech.features.store import StoreWriter, write_store_meta

    def score(source: Any) -> float:
        return abx_result(small_items, source, 50, distance="onehot").score

    reference = score(units)
    assert score({k: v[:, None] for k, v in units.items()}) == reference
    with StoreWriter(tmp_path / "store", 0, 1) as writer:
        for key, value in units.items():
            writer.add(key, np.eye(NUM_UNITS, dtype=np.float32)[value])
    write_store_meta(tmp_path / "store", {"num_shards": 1, "frame_rate": 50})
    assert score(tmp_path / "store") == reference
    jsonl = tmp_path / "units.jsonl"
    lines = [json.dumps({"fileid": k, "units": v.tolist()}) for k, v in units.items()]
    jsonl.write_text("\n".join(lines) + "\n")
    assert score(jsonl) == reference


def test_inputs_that_do_not_fit_the_distance(small_items, units, posteriorgrams):
    """kl_symmetric on logits or unit ids, onehot on probabilities or negative ids, and .km
    files (no fileids) are refused with the file and frame."""
    logits = {k: np.log(v) for k, v in posteriorgrams.items()}
    with pytest.raises(DataError, match=r"kl_symmetric needs posteriorgrams.*frame 0"):
        abx_result(small_items, logits, 50, distance="kl_symmetric")
    with pytest.raises(DataError, match="is not one-hot"):
        abx_result(small_items, posteriorgrams, 50, distance="onehot")
    with pytest.raises(DataError, match="use the onehot distance for unit ids"):
        abx_result(small_items, units, 50, distance="kl_symmetric")
    with pytest.raises(DataError, match=r"\.km lines have no fileids"):
        abx_result(small_items, "units.km", 50, distance="onehot")
    negative = {k: -v.astype(np.int64) - 1 for k, v in units.items()}
    with pytest.raises(DataError, match="non-negative integers"):
        abx_result(small_items, negative, 50, distance="onehot")


def test_cli_codebook_layers(abx_dir, tmp_path, capsys):
    """`abx ITEM --checkpoint SPIDR --audio DIR --distance onehot --layer all`: one line per
    codebook layer (2, 3), equal to `abx ITEM UNITS.jsonl --distance onehot` on the units that
    `transcribe --checkpoint` writes; kl_symmetric equals the score of the posteriorgrams."""
    import json

    from sslspeech.cli import main
    from tests.codebook_models import tiny_codebook_model

    files = ("f1_s08", "f1_s10", "m1_s08", "m1_s10")
    lines = (abx_dir / "phones.item").read_text().splitlines()
    item = tmp_path / "small.item"
    item.write_text("\n".join([lines[0], *(r for r in lines[1:] if r.split()[0] in files)]) + "\n")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(
        "fileid,path,num_samples\n"
        + "".join(f"{f},{abx_dir / 'wav' / f'{f}.wav'},0\n" for f in files)
    )
    model = tiny_codebook_model("spidr", tmp_path / "model")
    base = [str(item), "--context", "any"]
    model_args = ["--checkpoint", str(tmp_path / "model"), "--audio", str(abx_dir / "wav")]

    def run(argv: list[str]) -> list[dict[str, Any]]:
        assert main(["abx", *argv]) == 0
        return [json.loads(line) for line in capsys.readouterr().out.splitlines()]

    onehot = run([*base, *model_args, "--distance", "onehot", "--layer", "all"])
    assert [line["layer"] for line in onehot] == [2, 3]
    for line in onehot:
        units = tmp_path / f"units{line['layer']}.jsonl"
        argv = ["transcribe", "--checkpoint", str(tmp_path / "model"), "--layer"]
        assert main([*argv, str(line["layer"]), "--quiet", str(manifest), str(units)]) == 0
        (direct,) = run([str(item), str(units), "--context", "any", "--frequency", "50",
                         "--distance", "onehot"])  # fmt: skip
        assert line["score"] == direct["score"] and line["distance"] == "onehot"
    (kl,) = run([*base, *model_args, "--distance", "kl_symmetric", "--layer", "3"])
    from sslspeech.data.audio import load_audio, standardize
    from sslspeech.models.cpu_inference import optimize_for_cpu_inference

    fast = optimize_for_cpu_inference(copy.deepcopy(model))  # the CLI's path: near-ties agree

    def alone(fileid: str) -> np.ndarray:  # one utterance at a time; layer 3 is codebook 1
        wav = standardize(torch.from_numpy(load_audio(abx_dir / "wav" / f"{fileid}.wav")))
        with torch.inference_mode():
            return fast.get_codebooks(wav[None])[1][0].numpy()

    grams = {f: alone(f) for f in files}
    expected = abx_result(item, grams, 50, context="any", distance="kl_symmetric").score
    assert kl["score"] == pytest.approx(expected, abs=1e-6)
    assert main(["abx", *base, *model_args, "--distance", "onehot", "--layer", "1"]) == 1
    assert "have no codebook" in capsys.readouterr().err
