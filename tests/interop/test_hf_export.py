"""HF export: `export_hf` / `sslspeech convert --to hf` write a directory that
transformers.HubertModel loads and that computes our outputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sslspeech.cli import main
from sslspeech.interop.hf import export_hf
from sslspeech.models import load_model
from sslspeech.models.configs import HuBERTConfig
from sslspeech.models.hubert import HuBERT
from sslspeech.utils.safetensors import load_file

transformers = pytest.importorskip("transformers")

TOL = {"atol": 5e-5, "rtol": 1e-4}
SOURCES = [
    ("fairseq_base_like", "checkpoint.pt", {}),
    ("fairseq_large_like", "checkpoint.pt", {}),
    ("hf_large_like", "model_hub_keys", {}),
    ("torchaudio_base_like", "model.pth", {"num_heads": 4, "layer_norm_first": False}),
]


def hf_outputs(directory: Path, waveforms: torch.Tensor, attention_mask=None):
    model = transformers.HubertModel.from_pretrained(directory).eval()
    with torch.no_grad():
        out = model(waveforms, attention_mask=attention_mask, output_hidden_states=True)
    return out.last_hidden_state, out.hidden_states


def compare(ours: HuBERT, directory: Path, waveforms: torch.Tensor) -> None:
    last, hidden = hf_outputs(directory, waveforms)
    with torch.no_grad():
        torch.testing.assert_close(last, ours(waveforms), **TOL)
        layers = ours.get_intermediate_outputs(waveforms, before_residual=False)
    assert len(hidden) == ours.num_layers + 1
    for i, layer in enumerate(layers, 1):
        torch.testing.assert_close(hidden[i], layer, **TOL)


@pytest.mark.parametrize(("folder", "path", "overrides"), SOURCES)
def test_export_matches_transformers(
    fixtures_dir: Path, tmp_path: Path, folder: str, path: str, overrides: dict
) -> None:
    """Every source format exported to HF gives our final and per-layer outputs."""
    root = fixtures_dir / "hubert" / folder
    model = load_model(root / path, **overrides)
    export_hf(model, tmp_path / "hf")
    compare(
        HuBERT.from_pretrained(root / path, **overrides),
        tmp_path / "hf",
        load_file(root / "inputs.safetensors")["waveforms"],
    )


def test_export_padded_conv_rule(fixtures_dir: Path, tmp_path: Path) -> None:
    """A conv-rule model's padded batch agrees with transformers on valid frames."""
    root = fixtures_dir / "hubert" / "hf_base_like"
    ours = HuBERT.from_pretrained(root / "model")
    export_hf(ours, tmp_path / "hf")
    inputs = load_file(root / "inputs.safetensors")
    waveforms, lengths = inputs["padded_waveforms"], inputs["lengths"]
    attention_mask = (torch.arange(waveforms.shape[1]) < lengths[:, None]).long()
    last, _ = hf_outputs(tmp_path / "hf", waveforms, attention_mask)
    frames = ours.frame_lengths(lengths)
    with torch.no_grad():
        mine = ours(waveforms, lengths)
    for b, n in enumerate(frames.tolist()):
        torch.testing.assert_close(last[b, :n], mine[b, :n], **TOL)


def test_export_without_projection(tmp_path: Path) -> None:
    """A fairseq-style model without post_extract_proj (channels == width) gets an identity
    projection in HF; the re-imported HF directory reproduces it too."""
    torch.manual_seed(0)
    config = HuBERTConfig(
        extractor_conv_layers=((16, 10, 5), (16, 3, 2), (16, 2, 2)),
        feature_projection=False,
        embed_dim=16,
        ffn_dim=32,
        num_layers=2,
        num_heads=2,
        pos_conv_kernel=7,
        pos_conv_groups=2,
    )
    ours = HuBERT(config).eval()
    waveforms = torch.randn(2, 1600)
    export_hf(ours, tmp_path / "hf")
    compare(ours, tmp_path / "hf", waveforms)
    again = HuBERT.from_pretrained(tmp_path / "hf")
    with torch.no_grad():
        torch.testing.assert_close(again(waveforms), ours(waveforms), **TOL)


def test_convert_cli_to_hf(fixtures_dir: Path, tmp_path: Path, capsys) -> None:
    """`sslspeech convert SRC OUT --to hf` writes a loadable directory and reports it."""
    src = fixtures_dir / "hubert" / "s3prl_base_like" / "s3prl_converted.pt"
    assert main(["convert", str(src), str(tmp_path / "hf"), "--to", "hf"]) == 0
    assert '"to": "hf"' in capsys.readouterr().out
    waveforms = load_file(src.parent / "inputs.safetensors")["waveforms"]
    compare(HuBERT.from_pretrained(src), tmp_path / "hf", waveforms)
