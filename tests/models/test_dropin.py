"""Drop-in use for minimal_hubert / spidr code: constructors without a config give the Base
presets; `load_state_dict` takes HF, torchaudio, fairseq, s3prl and spidr state dicts (the
format fixtures) with strict key checking kept; `attention_mask` (HF convention) = lengths."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from sslspeech.errors import CheckpointError, DataError
from sslspeech.interop import safe_pickle
from sslspeech.models import configs, dinosr, load_model, spidr
from sslspeech.models.dinosr import DinoSR
from sslspeech.models.hubert import HuBERT, HuBERTPretrain
from sslspeech.models.spidr import SpidR
from sslspeech.utils.safetensors import load_file


def test_constructors_default_to_base() -> None:
    """HuBERT(), HuBERTPretrain(100), SpidR(), DinoSR() (built on the meta device: no memory)."""
    with torch.device("meta"):
        assert HuBERT().config == configs.base()
        pretrain = HuBERTPretrain(100)
        assert pretrain.config.num_classes == 100 and pretrain.label_embeddings.shape[0] == 104
        assert pretrain.config.replace(num_classes=500) == HuBERTPretrain().config
        assert SpidR().config == spidr.base() and DinoSR().config == dinosr.base()
        assert SpidR().num_layers == 12 and DinoSR().num_codebooks == 8


def _raw(fixtures: Path, path: str) -> dict[str, torch.Tensor]:
    """The state dict as the foreign package holds it."""
    file = fixtures / path
    if file.suffix == ".safetensors":
        return load_file(file)
    payload = safe_pickle.load(file)
    if "model_weight" in payload:  # s3prl
        return payload["model_weight"]
    return payload.get("model", payload)  # fairseq / spidr checkpoint, or a torchaudio dict


LAYOUTS = [
    ("hubert/hf_base_like/model/model.safetensors", "hubert/hf_base_like/model", {}),
    ("hubert/hf_large_like/model_hub_keys/model.safetensors", "hubert/hf_large_like/model", {}),
    ("hubert/torchaudio_base_like/model.pth", None, {"num_heads": 4, "layer_norm_first": False}),
    (
        "hubert/torchaudio_base_like/model_parametrized.pth",
        None,
        {"num_heads": 4, "layer_norm_first": False},
    ),
    ("hubert/torchaudio_pretrain/model.pth", None, {"num_heads": 2, "layer_norm_first": False}),
    ("hubert/fairseq_base_like/checkpoint.pt", None, {}),
    ("hubert/s3prl_base_like/s3prl_converted.pt", None, {}),
    ("spidr/tiny_spidr/checkpoint.pt", "spidr/tiny_spidr", {}),
    ("spidr/tiny_dinosr/checkpoint.pt", "spidr/tiny_dinosr", {}),
]


@pytest.mark.parametrize(("path", "checkpoint", "overrides"), LAYOUTS)
def test_load_state_dict_of_each_layout(
    fixtures_dir: Path, path: str, checkpoint: str | None, overrides: dict[str, Any]
) -> None:
    """A fresh model of the checkpoint's config, `load_state_dict(foreign)`, holds exactly the
    weights `from_pretrained` reads (strict load, every key mapped)."""
    reference: Any = load_model(fixtures_dir / (checkpoint or path), **overrides)
    fresh = type(reference)(reference.config)
    fresh.load_state_dict(_raw(fixtures_dir, path))
    expected = reference.state_dict()
    assert fresh.state_dict().keys() == expected.keys()
    for key, value in fresh.state_dict().items():
        torch.testing.assert_close(value, expected[key], rtol=0, atol=0, msg=key)


def test_pretraining_dict_into_encoder_and_strict_errors(fixtures_dir: Path) -> None:
    """A fairseq pretraining dict loads into HuBERT (heads dropped, as from_pretrained does); a
    key of no layout is named; a missing key is still reported; native dicts load as before."""
    reference: Any = load_model(fixtures_dir / "hubert/fairseq_base_like/checkpoint.pt")
    raw = _raw(fixtures_dir, "hubert/fairseq_base_like/checkpoint.pt")
    encoder = HuBERT(configs.HuBERTConfig.from_dict(
        {k: v for k, v in reference.config.to_dict().items() if k in configs.base().to_dict()}
    ))  # fmt: skip
    encoder.load_state_dict(raw)
    torch.testing.assert_close(
        encoder.state_dict()["encoder.transformer.layers.0.attention.qkv.weight"],
        reference.state_dict()["encoder.transformer.layers.0.attention.qkv.weight"],
    )
    with pytest.raises(CheckpointError, match=r"unexpected parameter 'encoder\.layers\.0\.bogus'"):
        encoder.load_state_dict({**raw, "encoder.layers.0.bogus": torch.zeros(1)})
    missing = {k: v for k, v in raw.items() if not k.startswith("encoder.layers.1.fc1.")}
    with pytest.raises(RuntimeError, match=r"Missing key\(s\).*layers\.1\.feed_forward"):
        encoder.load_state_dict(missing)
    encoder.load_state_dict(reference.state_dict(), strict=False)  # native pretraining keys
    with pytest.raises(RuntimeError, match="Unexpected key"):
        encoder.load_state_dict(reference.state_dict())


def test_attention_mask_equals_lengths(tmp_path: Path) -> None:
    """attention_mask 1 = valid sample gives the lengths' outputs (forward, intermediate
    outputs, pretraining loss); masks that are not right padding, or with lengths, are refused."""
    from tests.evaluation.test_cli import tiny_hubert

    torch.manual_seed(0)
    model = tiny_hubert(tmp_path)
    waveforms = torch.randn(2, 4000)
    lengths = torch.tensor([4000, 2500])
    mask = (torch.arange(4000) < lengths[:, None]).long()
    torch.testing.assert_close(model(waveforms, attention_mask=mask), model(waveforms, lengths))
    by_mask = model.get_intermediate_outputs(waveforms, attention_mask=mask.bool())
    for a, b in zip(by_mask, model.get_intermediate_outputs(waveforms, lengths), strict=True):
        torch.testing.assert_close(a, b)
    config = configs.HuBERTPretrainConfig.from_dict({**model.config.to_dict(), "num_classes": 5})
    pretrain = HuBERTPretrain(config).eval()
    labels = torch.zeros(2, 12, dtype=torch.long)
    frame_mask = torch.zeros(2, 12, dtype=torch.bool)
    frame_mask[:, 3:6] = True
    by_mask = pretrain(waveforms, labels, mask=frame_mask, attention_mask=mask)
    by_lengths = pretrain(waveforms, labels, mask=frame_mask, lengths=lengths)
    torch.testing.assert_close(by_mask.total, by_lengths.total)
    assert by_mask.num_frames == by_lengths.num_frames
    holes = mask.clone()
    holes[1, 100] = 0
    with pytest.raises(DataError, match=r"rows \[1\] are not 1...1 0...0"):
        model(waveforms, attention_mask=holes)
    with pytest.raises(DataError, match="not both"):
        model(waveforms, lengths, attention_mask=mask)
