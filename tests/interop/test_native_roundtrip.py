"""Native format: save_pretrained -> from_pretrained is bitwise (config, weights, outputs);
training checkpoints (`step_N.pt`) load through the same entry points; overrides apply."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sslspeech.errors import CheckpointError, ConfigError
from sslspeech.models import load_model
from sslspeech.models.hubert import HuBERT, HuBERTPretrain
from sslspeech.utils.safetensors import load_file

SOURCES = [
    ("fairseq_base_like", "checkpoint.pt", {}),
    ("fairseq_large_like", "checkpoint.pt", {}),
    ("hf_large_like", "model", {}),
    ("torchaudio_pretrain", "model.pth", {"num_heads": 2, "layer_norm_first": False}),
]


def assert_same_model(a: torch.nn.Module, b: torch.nn.Module) -> None:
    assert type(a) is type(b) and a.config == b.config
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert sa[key].dtype == sb[key].dtype and torch.equal(sa[key], sb[key]), key


@pytest.mark.parametrize(("folder", "path", "overrides"), SOURCES)
def test_save_load_bitwise(
    fixtures_dir: Path, tmp_path: Path, folder: str, path: str, overrides: dict
) -> None:
    """Every model type survives save_pretrained/from_pretrained bit for bit."""
    root = fixtures_dir / "hubert" / folder
    model = load_model(root / path, **overrides)
    model.save_pretrained(tmp_path / "native")
    config = json.loads((tmp_path / "native" / "config.json").read_text())
    assert config["model_type"] == model.model_type
    again = type(model).from_pretrained(tmp_path / "native")
    assert_same_model(model, again)
    assert_same_model(model, load_model(tmp_path / "native"))
    waveforms = load_file(root / "inputs.safetensors")["waveforms"]
    with torch.no_grad():
        assert torch.equal(model.encode(waveforms), again.encode(waveforms))


def test_training_checkpoint_loads(fixtures_dir: Path, tmp_path: Path) -> None:
    """A training checkpoint dict (model_type, model_config, model, optimizer, step) loads
    through HuBERTPretrain.from_pretrained, HuBERT.from_pretrained and load_model."""
    model = HuBERTPretrain.from_pretrained(
        fixtures_dir / "hubert" / "fairseq_base_like" / "checkpoint.pt"
    )
    step = tmp_path / "step_7.pt"
    torch.save(
        {
            "model_type": model.model_type,
            "model_config": {"model_type": model.model_type, **model.config.to_dict()},
            "model": model.state_dict(),
            "optimizer": {"state": {}, "param_groups": []},
            "scheduler": {},
            "step": 7,
        },
        step,
    )
    assert_same_model(model, HuBERTPretrain.from_pretrained(step))
    assert_same_model(model, load_model(step))
    encoder = HuBERT.from_pretrained(step)
    assert type(encoder) is HuBERT and encoder.config.embed_dim == model.config.embed_dim


def test_overrides_apply_and_are_validated(fixtures_dir: Path, tmp_path: Path) -> None:
    """Config overrides replace fields; unknown fields and pretrain-only loading fail clearly."""
    src = fixtures_dir / "hubert" / "hf_base_like" / "model"
    model = HuBERT.from_pretrained(src, dropout=0.0, layer_drop=0.0)
    assert model.config.dropout == 0.0 and model.config.layer_drop == 0.0
    with pytest.raises(ConfigError, match="unknown field"):
        HuBERT.from_pretrained(src, hidden_size=3)
    with pytest.raises(CheckpointError, match="not 'hubert_pretrain'"):
        HuBERTPretrain.from_pretrained(src)


def test_native_dir_with_wrong_weights_is_refused(fixtures_dir: Path, tmp_path: Path) -> None:
    """A config.json that does not fit the weights names the mismatching keys."""
    model = HuBERT.from_pretrained(fixtures_dir / "hubert" / "hf_base_like" / "model")
    model.save_pretrained(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    config["num_layers"] = 2
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="unexpected keys"):
        HuBERT.from_pretrained(tmp_path / "m")
