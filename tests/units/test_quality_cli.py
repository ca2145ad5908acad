"""`sslspeech units quality UNITS ALIGNMENTS`: the Python API's numbers as JSON (stdout and
--output), the P(phone | unit) heatmap as PNG with --plot, user errors exit 1."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sslspeech.cli import main
from sslspeech.evaluation.quality import read_alignments, read_units, unit_quality


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    """Noisy 50 Hz units of 5 utterances and their 100 Hz phone alignments (JSONL)."""
    rng = np.random.default_rng(0)
    phones = ["a", "b", "c", "sil"]
    units_lines, align_lines = [], []
    for k in range(5):
        labels = rng.integers(0, 4, 40)
        units = np.where(rng.random(40) < 0.7, labels * 2 + rng.integers(0, 2, 40), 9)
        units_lines.append(json.dumps({"fileid": f"u{k}", "units": units.tolist()}))
        frames = [phones[p] for p in labels for _ in range(2)][:79]  # one frame short
        align_lines.append(json.dumps({"name": f"u{k}", "phones": frames}))
    (tmp_path / "units.jsonl").write_text("\n".join(units_lines) + "\n")
    (tmp_path / "ali.jsonl").write_text("\n".join(align_lines) + "\n")
    return tmp_path / "units.jsonl", tmp_path / "ali.jsonl"


def test_same_numbers_as_the_api(files, tmp_path, capsys):
    """stdout, --output and unit_quality(read_units, read_alignments) agree; --plot is a PNG."""
    units, alignments = files
    out, plot = tmp_path / "quality.json", tmp_path / "heatmap.png"
    argv = ["units", "quality", str(units), str(alignments), "--frequency", "50"]
    assert main([*argv, "--output", str(out), "--plot", str(plot)]) == 0
    printed = json.loads(capsys.readouterr().out)
    expected = unit_quality(read_units(units), read_alignments(alignments), 50, 100)
    assert printed == json.loads(out.read_text()) == {"units": str(units), **expected}
    for key in ("phone_purity", "cluster_purity", "pnmi", "unit_perplexity", "bitrate_dedup"):
        assert key in printed
    assert 0 < printed["pnmi"] < 1 and printed["bitrate_dedup"] < printed["bitrate"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rates_are_passed_and_errors_exit_1(files, capsys):
    """--frequency 100 (units taken as 100 Hz) changes the bitrate as the API does; a rate
    that makes the lengths disagree is a user error naming the utterance."""
    units, alignments = files
    assert main(["units", "quality", str(units), str(alignments), "--frequency", "25",
                 "--phone-frequency", "50"]) == 0  # fmt: skip
    printed = json.loads(capsys.readouterr().out)
    assert (
        printed["bitrate"]
        == unit_quality(read_units(units), read_alignments(alignments), 25, 50)["bitrate"]
    )
    assert main(["units", "quality", str(units), str(alignments), "--frequency", "100"]) == 1
    assert "utterance 'u0'" in capsys.readouterr().err
