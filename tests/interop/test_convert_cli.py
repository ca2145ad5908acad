"""`sslspeech convert`: native output loads back identically; overrides reach the reader;
errors exit 1 with a message."""

from __future__ import annotations

from pathlib import Path

import torch

from sslspeech.cli import main
from sslspeech.models import load_model
from sslspeech.utils.safetensors import load_file


def test_convert_torchaudio_to_native_with_overrides(fixtures_dir: Path, tmp_path: Path) -> None:
    """--set passes the fields a torchaudio state dict lacks; the native copy is the same model."""
    src = fixtures_dir / "hubert" / "torchaudio_base_like" / "model.pth"
    out = tmp_path / "native"
    args = [
        "convert",
        str(src),
        str(out),
        "--set",
        "num_heads=4",
        "--set",
        "layer_norm_first=false",
    ]
    assert main(args) == 0
    original = load_model(src, num_heads=4, layer_norm_first=False)
    converted = load_model(out)
    assert converted.config == original.config
    waveforms = load_file(src.parent / "inputs.safetensors")["waveforms"]
    with torch.no_grad():
        assert torch.equal(converted.encode(waveforms), original.encode(waveforms))


def test_convert_errors_exit_1(fixtures_dir: Path, tmp_path: Path, capsys) -> None:
    """A missing override or an unreadable source is reported, exit status 1."""
    src = fixtures_dir / "hubert" / "torchaudio_base_like" / "model.pth"
    assert main(["convert", str(src), str(tmp_path / "o")]) == 1
    assert "num_heads" in capsys.readouterr().err
    (tmp_path / "junk.bin").write_bytes(b"junk")
    assert main(["convert", str(tmp_path / "junk.bin"), str(tmp_path / "o2")]) == 1
    assert "unknown checkpoint format" in capsys.readouterr().err
    assert main(["convert", str(src), str(tmp_path / "o3"), "--set", "oops"]) == 1
