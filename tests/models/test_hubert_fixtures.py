"""Every ../shared/fixtures/hubert folder, loaded through `from_pretrained`, reproduces every
expected tensor of its reference (transformers, s3prl/fairseq, torchaudio) within the fixture
tolerance, padded batches on the frames each source calls valid."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sslspeech.models.encoder import padding_mask
from sslspeech.models.hubert import HuBERT, HuBERTPretrain
from sslspeech.utils.safetensors import load_file

TOL = {"atol": 5e-5, "rtol": 1e-4}

# (folder, checkpoint path inside it, family)
CASES = [
    ("hf_base_like", "model", "hf"),
    ("hf_base_like", "model_hub_keys", "hf"),
    ("hf_large_like", "model", "hf"),
    ("hf_large_like", "model_hub_keys", "hf"),
    ("fairseq_base_like", "checkpoint.pt", "fairseq"),
    ("fairseq_large_like", "checkpoint.pt", "fairseq"),
    ("s3prl_base_like", "s3prl_converted.pt", "fairseq"),
    ("torchaudio_base_like", "model.pth", "torchaudio"),
    ("torchaudio_base_like", "model_parametrized.pth", "torchaudio"),
]

# expected-key prefix of per-layer full outputs and of the final output, per family
LAYER_KEYS = {"hf": "hidden_states_", "fairseq": "x_layer_", "torchaudio": "layer_"}
FINAL_KEYS = {"hf": "last_hidden_state", "fairseq": "x_final", "torchaudio": "output"}


def load(fixtures_dir: Path, folder: str) -> tuple[dict, dict, dict]:
    root = fixtures_dir / "hubert" / folder
    meta = json.loads((root / "fixture.json").read_text())
    return meta, load_file(root / "inputs.safetensors"), load_file(root / "expected.safetensors")


def overrides_for(meta: dict) -> dict:
    """What a torchaudio state dict does not record, taken from fixture.json's config."""
    if not meta["kind"].startswith("torchaudio"):
        return {}
    config = meta["config"]
    return {
        "num_heads": config["encoder_num_heads"],
        "layer_norm_first": config["encoder_layer_norm_first"],
    }


def close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    torch.testing.assert_close(actual, expected, **TOL, msg=lambda m: f"{what}: {m}")


@pytest.fixture(scope="module", params=CASES, ids=lambda c: f"{c[0]}/{c[1]}")
def case(request: pytest.FixtureRequest, fixtures_dir: Path):
    folder, path, family = request.param
    meta, inputs, expected = load(fixtures_dir, folder)
    model = HuBERT.from_pretrained(fixtures_dir / "hubert" / folder / path, **overrides_for(meta))
    return folder, family, model, inputs, expected


def check_outputs(model, family, waveforms, lengths, expected, prefix, valid) -> None:
    """Compare debug aids, layer inputs/outputs, FFN outputs and the final output on `valid`."""
    with torch.no_grad():
        out = model.encoder(waveforms, lengths)
        final = model.encode(waveforms, lengths)
        full = model.get_intermediate_outputs(waveforms, lengths, before_residual=False)
        ffn = model.get_intermediate_outputs(waveforms, lengths)
    assert len(full) == len(ffn) == model.num_layers
    checks = {FINAL_KEYS[family]: final}
    for i in range(1, model.num_layers + 1):
        checks[f"{LAYER_KEYS[family]}{i}"] = full[i - 1]
        checks[f"ffn_layer_{i}"] = ffn[i - 1]
    if family != "torchaudio":
        checks[f"{LAYER_KEYS[family]}0"] = out.layer_input
    if not prefix:
        checks["conv_features"] = out.conv_features
        checks["projected_features"] = model.encoder.feature_projection(out.conv_features)
    compared = 0
    for key, actual in checks.items():
        name = prefix + key
        if name not in expected:
            continue
        close(actual[valid], expected[name][valid], name)
        compared += 1
    assert compared >= model.num_layers + 1


def test_unpadded_outputs(case) -> None:
    """Every float key of the unpadded batch matches."""
    _, family, model, inputs, expected = case
    waveforms = inputs["waveforms"]
    valid = torch.ones(waveforms.shape[0], expected["conv_features"].shape[1], dtype=torch.bool)
    check_outputs(model, family, waveforms, None, expected, "", valid)


def test_padded_outputs(case) -> None:
    """Padded batch: the source's frame-validity rule, and outputs on valid frames."""
    _, family, model, inputs, expected = case
    waveforms, lengths = inputs["padded_waveforms"], inputs["lengths"]
    num_frames = expected["conv_features"].shape[1]
    frame_lengths = model.frame_lengths(lengths, num_samples=waveforms.shape[1])
    if "padded_frame_lengths" in expected:
        assert torch.equal(frame_lengths, expected["padded_frame_lengths"])
    else:
        expected_mask = expected["padded_frame_padding_mask"]
        assert torch.equal(padding_mask(frame_lengths, num_frames), expected_mask)
    valid = ~padding_mask(frame_lengths, num_frames)
    check_outputs(model, family, waveforms, lengths, expected, "padded_", valid)


PRETRAIN_CASES = [
    ("fairseq_base_like", "checkpoint.pt"),
    ("fairseq_large_like", "checkpoint.pt"),
    ("s3prl_base_like", "s3prl_converted.pt"),
    ("torchaudio_pretrain", "model.pth"),
]


@pytest.mark.parametrize(("folder", "path"), PRETRAIN_CASES)
def test_pretrain_logits_and_loss(fixtures_dir: Path, folder: str, path: str) -> None:
    """Masked-prediction logits (with -inf at the positive row), features_pen, CE sums and
    the summed loss over its count of masked frames; fairseq label-rate alignment included
    (s3prl: label rate 100)."""
    meta, inputs, expected = load(fixtures_dir, folder)
    root = fixtures_dir / "hubert" / folder
    model = HuBERTPretrain.from_pretrained(root / path, **overrides_for(meta))
    waveforms, labels, mask = inputs["waveforms"], inputs["labels"], inputs["mask"]
    with torch.no_grad():
        out = model.compute_logits(waveforms, labels, mask)
        total, count, stats = model(waveforms, labels, mask=mask)
    for key, actual in (("logit_m", out.logit_m), ("logit_u", out.logit_u)):
        assert actual.shape == expected[key].shape
        assert torch.equal(torch.isinf(actual), torch.isinf(expected[key]))
        close(actual, expected[key], key)
    close(out.features_pen, expected["features_pen"], "features_pen")
    n_masked, n_unmasked = out.logit_m.shape[0], out.logit_u.shape[0]
    assert count == n_masked == expected["logit_m"].shape[0]
    rtol = {"atol": 0.0, "rtol": 1e-4}
    torch.testing.assert_close(stats["loss_m"] * n_masked, expected["loss_m_sum"], **rtol)
    torch.testing.assert_close(stats["loss_u"] * n_unmasked, expected["loss_u_sum"], **rtol)
    torch.testing.assert_close(total, expected["loss"], **rtol)
    torch.testing.assert_close(stats["features_pen"], expected["features_pen"], **TOL)
    assert 0.0 <= float(stats["acc_m"]) <= 1.0


def test_torchaudio_pretrain_layers(fixtures_dir: Path) -> None:
    """HuBERTPretrain's encoder outputs (no masking) match torchaudio's extract_features."""
    meta, inputs, expected = load(fixtures_dir, "torchaudio_pretrain")
    path = fixtures_dir / "hubert" / "torchaudio_pretrain" / "model.pth"
    model = HuBERTPretrain.from_pretrained(path, **overrides_for(meta))
    with torch.no_grad():
        layers = model.get_intermediate_outputs(inputs["waveforms"], before_residual=False)
    for i, actual in enumerate(layers, 1):
        close(actual, expected[f"layer_{i}"], f"layer_{i}")


def test_pretrain_checkpoint_loads_as_encoder(fixtures_dir: Path) -> None:
    """HuBERT.from_pretrained on a pretraining checkpoint keeps the encoder, drops the heads,
    and gives the same encoder output as HuBERTPretrain."""
    path = fixtures_dir / "hubert" / "fairseq_base_like" / "checkpoint.pt"
    encoder, full = HuBERT.from_pretrained(path), HuBERTPretrain.from_pretrained(path)
    assert type(encoder) is HuBERT
    assert not any(key.startswith(("final_proj", "label_")) for key in encoder.state_dict())
    waveforms = load(fixtures_dir, "fairseq_base_like")[1]["waveforms"]
    with torch.no_grad():
        assert torch.equal(encoder(waveforms), full.encode(waveforms))


def test_normalize_input_recorded(fixtures_dir: Path) -> None:
    """config.normalize_input follows task.normalize (fairseq) and HF's layer-norm convention."""
    root = fixtures_dir / "hubert"
    assert not HuBERT.from_pretrained(
        root / "fairseq_base_like" / "checkpoint.pt"
    ).config.normalize_input
    assert HuBERT.from_pretrained(
        root / "fairseq_large_like" / "checkpoint.pt"
    ).config.normalize_input
    assert HuBERT.from_pretrained(root / "hf_large_like" / "model").config.normalize_input
    assert not HuBERT.from_pretrained(root / "hf_base_like" / "model").config.normalize_input


def test_every_expected_key_is_checked(fixtures_dir: Path) -> None:
    """The tests above compare every tensor of every expected.safetensors (names listed here
    are exactly the ones check_outputs / the pretrain tests look up)."""
    families = {"hf": "hf", "fairseq": "fairseq", "s3prl": "fairseq", "torchaudio": "torchaudio"}
    logits = {"logit_m", "logit_u", "features_pen", "loss_m_sum", "loss_u_sum", "loss"}
    for root in sorted((fixtures_dir / "hubert").iterdir()):
        if not root.is_dir():
            continue
        expected = set(load_file(root / "expected.safetensors"))
        family = families[root.name.split("_")[0]]
        num_layers = sum(1 for key in expected if key.startswith("ffn_layer_")) or 2
        names = {FINAL_KEYS[family]}
        for i in range(num_layers + 1):
            names |= {f"{LAYER_KEYS[family]}{i}", f"ffn_layer_{i}"}
        debug = {"conv_features", "projected_features"}  # unpadded only
        covered = names | debug | {f"padded_{n}" for n in names} | logits
        covered |= {"padded_frame_lengths", "padded_frame_padding_mask"}
        assert expected <= covered, (root.name, sorted(expected - covered))
