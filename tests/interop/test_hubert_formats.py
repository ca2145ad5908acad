"""Format detection from content and the less common layouts of each HuBERT format: fairseq
legacy `args` and CTC fine-tuned checkpoints, HF pytorch_model.bin and task-head prefixes,
torchaudio sizes that need overrides, and clear errors for what is not a checkpoint."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from sslspeech.errors import CheckpointError, ConfigError
from sslspeech.interop import CheckpointSource, detect, load_checkpoint, safe_pickle
from sslspeech.models.hubert import HuBERT
from sslspeech.utils.safetensors import load_file

TOL = {"atol": 5e-5, "rtol": 1e-4}

DETECTED = [
    ("hf_base_like/model", "hf", "hubert"),
    ("hf_large_like/model_hub_keys", "hf", "hubert"),
    ("fairseq_base_like/checkpoint.pt", "fairseq", "hubert_pretrain"),
    ("fairseq_large_like/checkpoint.pt", "fairseq", "hubert_pretrain"),
    ("s3prl_base_like/s3prl_converted.pt", "s3prl", "hubert_pretrain"),
    ("torchaudio_base_like/model.pth", "torchaudio", "hubert"),
    ("torchaudio_base_like/model_parametrized.pth", "torchaudio", "hubert"),
    ("torchaudio_pretrain/model.pth", "torchaudio", "hubert_pretrain"),
]


@pytest.mark.parametrize(("path", "reader", "model_type"), DETECTED)
def test_detected_from_content(fixtures_dir: Path, tmp_path: Path, path, reader, model_type):
    """Each fixture is recognised by content, also when copied under a meaningless name."""
    src = fixtures_dir / "hubert" / path
    copy = tmp_path / "x"
    if src.is_dir():
        shutil.copytree(src, copy)
    else:
        shutil.copy(src, copy)
    assert detect(CheckpointSource(copy)).name == reader
    overrides = {"num_heads": 2, "layer_norm_first": False} if reader == "torchaudio" else {}
    if "base_like" in path and reader == "torchaudio":
        overrides["num_heads"] = 4
    assert load_checkpoint(copy, **overrides).model_type == model_type


def fixture_payload(fixtures_dir: Path, folder: str = "fairseq_base_like") -> dict:
    return safe_pickle.load(fixtures_dir / "hubert" / folder / "checkpoint.pt")


def expected(fixtures_dir: Path, folder: str = "fairseq_base_like") -> tuple[dict, dict]:
    root = fixtures_dir / "hubert" / folder
    return load_file(root / "inputs.safetensors"), load_file(root / "expected.safetensors")


def test_fairseq_legacy_args_layout(fixtures_dir: Path, tmp_path: Path) -> None:
    """Old fairseq checkpoints keep one flat `args` namespace instead of `cfg`."""
    payload = fixture_payload(fixtures_dir)
    args = {**payload["cfg"]["task"], **payload["cfg"]["model"]}
    model_state = {
        k: v for k, v in payload["model"].items() if not k.startswith(("final_proj", "label_"))
    }
    torch.save({"args": args, "cfg": None, "model": model_state}, tmp_path / "old.pt")
    model = HuBERT.from_pretrained(tmp_path / "old.pt")
    inputs, exp = expected(fixtures_dir)
    with torch.no_grad():
        torch.testing.assert_close(model(inputs["waveforms"]), exp["x_final"], **TOL)


def test_fairseq_ctc_finetuned_layout(fixtures_dir: Path, tmp_path: Path) -> None:
    """A `hubert_ctc` fine-tuned checkpoint gives its encoder (w2v_encoder.w2v_model.*),
    configured from cfg.model.w2v_args; the CTC projection is left out."""
    payload = fixture_payload(fixtures_dir, "fairseq_large_like")
    cfg = payload["cfg"]
    state = {f"w2v_encoder.w2v_model.{k}": v for k, v in payload["model"].items()}
    state["w2v_encoder.proj.weight"] = torch.zeros(32, 64)
    ctc = {
        "cfg": {
            "model": {
                "_name": "hubert_ctc",
                "w2v_args": {"model": cfg["model"], "task": cfg["task"]},
            },
            "task": {"_name": "audio_finetuning", "normalize": True},
        },
        "model": state,
    }
    torch.save(ctc, tmp_path / "ctc.pt")
    loaded = load_checkpoint(tmp_path / "ctc.pt")
    assert loaded.model_type == "hubert" and loaded.config["normalize_input"] is True
    model = HuBERT.from_pretrained(tmp_path / "ctc.pt")
    inputs, exp = expected(fixtures_dir, "fairseq_large_like")
    with torch.no_grad():
        torch.testing.assert_close(model(inputs["waveforms"]), exp["x_final"], **TOL)


def test_fairseq_other_model_is_refused(fixtures_dir: Path, tmp_path: Path) -> None:
    """A fairseq checkpoint of another architecture is named in the error."""
    payload = fixture_payload(fixtures_dir)
    payload["cfg"]["model"]["_name"] = "wav2vec2"
    torch.save({"cfg": payload["cfg"], "model": payload["model"]}, tmp_path / "w2v.pt")
    with pytest.raises(CheckpointError, match="wav2vec2"):
        HuBERT.from_pretrained(tmp_path / "w2v.pt")


def test_hf_pytorch_model_bin_and_task_heads(fixtures_dir: Path, tmp_path: Path) -> None:
    """HF directories with pytorch_model.bin, and HubertForCTC weights (`hubert.` prefix plus
    an lm_head), load the same encoder."""
    root = fixtures_dir / "hubert" / "hf_base_like"
    state = load_file(root / "model_hub_keys" / "model.safetensors")
    directory = tmp_path / "ctc"
    directory.mkdir()
    config = json.loads((root / "model" / "config.json").read_text())
    config["architectures"] = ["HubertForCTC"]
    (directory / "config.json").write_text(json.dumps(config))
    heads = {"lm_head.weight": torch.zeros(32, 48), "lm_head.bias": torch.zeros(32)}
    torch.save(
        {**{f"hubert.{k}": v for k, v in state.items()}, **heads}, directory / "pytorch_model.bin"
    )
    model = HuBERT.from_pretrained(directory)
    inputs, exp = expected(fixtures_dir, "hf_base_like")
    with torch.no_grad():
        torch.testing.assert_close(model(inputs["waveforms"]), exp["last_hidden_state"], **TOL)


def test_torchaudio_unknown_size_needs_overrides(fixtures_dir: Path) -> None:
    """A non-standard torchaudio width without num_heads/layer_norm_first says what to pass."""
    src = fixtures_dir / "hubert" / "torchaudio_base_like" / "model.pth"
    with pytest.raises(ConfigError, match=r"num_heads=.*layer_norm_first="):
        HuBERT.from_pretrained(src)
    with pytest.raises(ConfigError, match="layer_norm_first="):
        HuBERT.from_pretrained(src, num_heads=4)


def test_torchaudio_released_size_is_inferred(tmp_path: Path) -> None:
    """A 768-wide group-norm state dict is taken as HuBERT Base (12 heads, post-LN) and a
    layer-norm one as Large-style (pre-LN, standardized input)."""
    from sslspeech.models.configs import base

    torch.manual_seed(0)
    small = base(num_layers=1, ffn_dim=64)
    state = HuBERT(small).state_dict()
    ta = {}
    for key, value in state.items():
        key = key[len("encoder.") :]
        key = key.replace("transformer.", "encoder.transformer.").replace(
            "feature_projection.", "encoder.feature_projection."
        )
        if key.endswith("attention.qkv.weight") or key.endswith("attention.qkv.bias"):
            prefix, kind = key.split("attention.qkv.")
            for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3), strict=True):
                ta[f"{prefix}attention.{name}.{kind}"] = part
            continue
        ta[key.replace("attention.proj.", "attention.out_proj.")] = value
    torch.save(ta, tmp_path / "base.pth")
    loaded = load_checkpoint(tmp_path / "base.pth")
    assert loaded.config["num_heads"] == 12 and loaded.config["layer_norm_first"] is False
    assert loaded.config["normalize_input"] is False
    model = HuBERT.from_pretrained(tmp_path / "base.pth")
    for key, value in state.items():
        assert torch.equal(model.state_dict()[key], value), key


def test_not_a_checkpoint(tmp_path: Path) -> None:
    """Text files, foreign pickles and empty directories give a CheckpointError listing the
    formats tried."""
    (tmp_path / "notes.txt").write_text("hello")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    (tmp_path / "empty").mkdir()
    for path in (tmp_path / "notes.txt", tmp_path / "list.pt", tmp_path / "empty"):
        with pytest.raises(CheckpointError, match="unknown checkpoint format"):
            HuBERT.from_pretrained(path)
