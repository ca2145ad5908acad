"""`sslspeech abx`: one JSON line with the score and the settings; model layers mode."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from sslspeech.cli import main
from sslspeech.evaluation import abx


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    assert main(["abx", *argv]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_features_mode(
    abx_dir: Path, abx_expected: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """Default ZeroSpeech subsampling and `none`: fastabx's numbers, settings echoed."""
    expected = abx_expected["scores"]["fbank40_50hz"]["speaker-within/context-within"]
    item, features = abx_dir / "phones.item", abx_dir / "features_fbank40_50hz"
    args = [str(item), str(features), "--frequency", "50", "--speaker", "within"]
    (line,) = run_cli(args, capsys)
    assert abs(line["score"] - expected["zerospeech_subsampled"]["score"]) <= 1e-4
    assert line["speaker"] == "within" and line["context"] == "within"
    assert (line["max_size_group"], line["max_x_across"], line["seed"]) == (10, None, 0)
    assert line["frequency"] == "50" and line["n_triplets"] == 7168
    args += ["--max-size-group", "none", "--max-x-across", "none", "--device", "cpu"]
    (line,) = run_cli(args, capsys)
    assert abs(line["score"] - expected["deterministic"]["score"]) <= 1e-4
    assert line["max_size_group"] is None


def test_user_errors_exit_1(abx_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Missing --frequency or missing features: message on stderr, exit status 1."""
    item = str(abx_dir / "phones.item")
    assert main(["abx", item, str(abx_dir / "features_fbank40_50hz")]) == 1
    assert "--frequency" in capsys.readouterr().err
    assert main(["abx", item]) == 1
    assert main(["abx", item, str(abx_dir / "nowhere"), "--frequency", "50"]) == 1
    assert "nowhere" in capsys.readouterr().err


def tiny_hubert(directory: Path) -> Any:
    """A random 2-layer HuBERT with the 320-sample (50 Hz) conv stack, saved natively."""
    from sslspeech.models.configs import HuBERTConfig
    from sslspeech.models.hubert import HuBERT

    torch.manual_seed(0)
    conv = ((16, 10, 5),) + ((16, 3, 2),) * 4 + ((16, 2, 2),) * 2
    config = HuBERTConfig(
        extractor_conv_layers=conv,
        embed_dim=16,
        ffn_dim=32,
        num_layers=2,
        num_heads=2,
        pos_conv_kernel=8,
        pos_conv_groups=2,
        normalize_input=True,
    )
    model = HuBERT(config).eval()
    model.save_pretrained(directory)
    return model


def test_model_layers_mode(
    abx_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--checkpoint/--audio/--layer all: one line per layer, equal to `abx` on the layer
    features computed here directly (standardized input, before-residual outputs)."""
    from sslspeech.data.audio import load_audio, standardize

    files = ("f1_s08", "f1_s10", "m1_s08", "m1_s10")
    lines = (abx_dir / "phones.item").read_text().splitlines()
    item = tmp_path / "small.item"
    item.write_text(
        "\n".join([lines[0], *(row for row in lines[1:] if row.split()[0] in files)]) + "\n"
    )
    model = tiny_hubert(tmp_path / "model")
    args = [str(item), "--checkpoint", str(tmp_path / "model"), "--audio", str(abx_dir / "wav")]
    results = run_cli([*args, "--context", "any", "--layer", "all"], capsys)
    assert [line["layer"] for line in results] == [1, 2]
    with torch.inference_mode():
        outputs = {
            f: model.get_intermediate_outputs(
                standardize(torch.from_numpy(load_audio(abx_dir / "wav" / f"{f}.wav")))[None]
            )
            for f in files
        }
    for line in results:
        features = {f: out[line["layer"] - 1][0].numpy() for f, out in outputs.items()}
        expected = abx(item, features, 50, context="any")
        assert line["score"] == pytest.approx(expected, abs=1e-6)
        assert line["frequency"] == "50" and 0 <= line["score"] <= 1
