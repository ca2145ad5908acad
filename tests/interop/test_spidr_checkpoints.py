"""Readers for SpidR/DinoSR checkpoints: the spidr package's native layout (file or folder,
flat/nested/absent config.json, DDP `module.` prefix), the original DinoSR fairseq `.ckpt`, and
our training checkpoint; errors name what is wrong."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from sslspeech.errors import CheckpointError
from sslspeech.interop import load_checkpoint
from sslspeech.interop.spidr import config_from_spidr
from sslspeech.models import load_model
from sslspeech.models.dinosr import DinoSR
from sslspeech.models.spidr import SpidR
from sslspeech.utils.safetensors import load_file


def _folder(fixtures_dir: Path, name: str) -> Path:
    return fixtures_dir / "spidr" / name


def _same_outputs(a: DinoSR, b: DinoSR, fixture: Path) -> None:
    waveforms = load_file(fixture / "inputs.safetensors")["waveforms"]
    with torch.no_grad():
        assert torch.equal(a.encode(waveforms), b.encode(waveforms))
        for x, y in zip(a.get_codebooks(waveforms), b.get_codebooks(waveforms), strict=True):
            assert torch.equal(x, y)


def test_native_file_and_folder_agree(fixtures_dir: Path) -> None:
    """checkpoint.pt given directly reads like its folder (config.json next to it)."""
    folder = _folder(fixtures_dir, "tiny_spidr")
    by_file = load_checkpoint(folder / "checkpoint.pt")
    by_folder = load_checkpoint(folder)
    assert by_file.format == by_folder.format == "spidr"
    assert by_file.model_type == "spidr" and by_file.config == by_folder.config
    assert by_file.state_dict.keys() == by_folder.state_dict.keys()
    assert by_file.state_dict["heads.weight"].shape == (2, 32, 48)
    assert by_file.state_dict["codebooks.sums"].shape == (2, 32, 48)


def test_dinosr_native_is_dinosr(fixtures_dir: Path) -> None:
    """A config.json without the SpidR-only fields gives a DinoSR."""
    assert type(load_model(_folder(fixtures_dir, "tiny_dinosr"))) is DinoSR


def test_nested_config_and_module_prefix(fixtures_dir: Path, tmp_path: Path) -> None:
    """Training-run config.json ({"run": {"model_type"}, "model": {...}}) and a DDP state dict
    with `module.` keys load to the same model."""
    folder = _folder(fixtures_dir, "tiny_dinosr")
    raw = json.loads((folder / "config.json").read_text())
    (tmp_path / "config.json").write_text(
        json.dumps({"run": {"model_type": "dinosr"}, "model": raw})
    )
    state = torch.load(folder / "checkpoint.pt", weights_only=True)["model"]
    torch.save(
        {"model": {f"module.{k}": v for k, v in state.items()}, "step": 3},
        tmp_path / "step_3.pt",
    )
    loaded = load_model(tmp_path / "step_3.pt")
    assert type(loaded) is DinoSR
    _same_outputs(loaded, load_model(folder), folder)


def test_weights_only_checkpoint(fixtures_dir: Path, tmp_path: Path) -> None:
    """Without config.json the shapes give the config (heads via override); both classes
    accept such a file."""
    for name, cls, heads in (("tiny_spidr", SpidR, 4), ("tiny_dinosr", DinoSR, 2)):
        folder = _folder(fixtures_dir, name)
        target = tmp_path / name / "weights.pt"
        target.parent.mkdir()
        shutil.copy(folder / "checkpoint.pt", target)
        model = cls.from_pretrained(target, num_heads=heads, dropout=0.0, attention_dropout=0.0)
        assert type(model) is cls
        _same_outputs(model, load_model(folder), folder)


def test_fairseq_dinosr_config_and_step(fixtures_dir: Path) -> None:
    """dinosr.ckpt: config from cfg.model equals the reference config.json; current_step from
    last_optimizer_state; teacher from `_ema`."""
    folder = _folder(fixtures_dir, "tiny_dinosr_fairseq_original")
    loaded = load_checkpoint(folder / "dinosr.ckpt")
    assert loaded.format == "dinosr_fairseq" and loaded.model_type == "dinosr"
    reference = config_from_spidr(json.loads((folder / "config.json").read_text()), "ref")
    for key, value in reference.items():
        got = loaded.config[key]
        if key == "extractor_conv_layers":
            got, value = [list(x) for x in got], [list(x) for x in value]
        if key == "ema_exclude_layers":
            got, value = list(got), list(value)
        assert got == value, key
    assert loaded.state_dict["current_step"].tolist() == [2000]
    assert loaded.state_dict["teacher.layers.0.attention.qkv.bias"].shape == (96,)
    assert loaded.config["normalize_input"] is True
    _same_outputs(DinoSR.from_pretrained(folder / "dinosr.ckpt"), load_model(folder), folder)


def test_fairseq_dinosr_missing_codebook_is_an_error(fixtures_dir: Path, tmp_path: Path) -> None:
    """A DinoSR fairseq checkpoint missing a codebook entry raises CheckpointError naming it."""
    payload = torch.load(
        _folder(fixtures_dir, "tiny_dinosr_fairseq_original") / "dinosr.ckpt", weights_only=True
    )
    del payload["model"]["_codebook_cnts3"]
    torch.save(payload, tmp_path / "broken.ckpt")
    with pytest.raises(CheckpointError, match=r"codebooks\.3\.counts"):
        load_model(tmp_path / "broken.ckpt")


def test_unknown_config_field_is_an_error(fixtures_dir: Path, tmp_path: Path) -> None:
    """An unknown field in config.json names the field."""
    folder = _folder(fixtures_dir, "tiny_spidr")
    raw = json.loads((folder / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**raw, "encoder_bogus": 1}))
    shutil.copy(folder / "checkpoint.pt", tmp_path / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="encoder_bogus"):
        load_model(tmp_path)


def test_wrong_class_is_refused(fixtures_dir: Path) -> None:
    """SpidR.from_pretrained on a DinoSR checkpoint (with config) refuses."""
    with pytest.raises(CheckpointError, match="dinosr"):
        SpidR.from_pretrained(_folder(fixtures_dir, "tiny_dinosr"))


def test_training_checkpoint(fixtures_dir: Path, tmp_path: Path) -> None:
    """Our training checkpoint (`model_type`, `model_config`, `model`) loads through
    from_pretrained with the same outputs."""
    folder = _folder(fixtures_dir, "tiny_spidr")
    model = load_model(folder)
    assert isinstance(model, SpidR)
    torch.save(
        {
            "model_type": "spidr",
            "model_config": {"model_type": "spidr", **model.config.to_dict()},
            "model": model.state_dict(),
            "step": 7,
        },
        tmp_path / "step_7.pt",
    )
    loaded = SpidR.from_pretrained(tmp_path / "step_7.pt")
    _same_outputs(loaded, model, folder)


def test_fairseq_cfg_interpolation_and_no_freeze(fixtures_dir: Path, tmp_path: Path) -> None:
    """cfg values as omegaconf interpolations resolve from the cfg; freeze_teacher_step=-1
    (never freeze) becomes a step no run reaches."""
    payload = torch.load(
        _folder(fixtures_dir, "tiny_dinosr_fairseq_original") / "dinosr.ckpt", weights_only=True
    )
    payload["cfg"]["model"]["ema_anneal_end_step"] = "${optimization.max_update}"
    payload["cfg"]["model"]["freeze_teacher_step"] = -1
    torch.save(payload, tmp_path / "dinosr.ckpt")
    model = DinoSR.from_pretrained(tmp_path / "dinosr.ckpt")
    assert model.config.ema_final_step == payload["cfg"]["optimization"]["max_update"]
    assert model.config.freeze_step > 10**12
    assert model.update_teacher(10**7) < 1.0
