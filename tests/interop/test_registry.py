"""Registry of published checkpoints: official sources, offline errors, loading over HTTP."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from sslspeech.errors import ConfigError, DownloadError
from sslspeech.interop import registry
from sslspeech.utils.safetensors import load_file
from tests.interop.loopback import serve

SPIDR_CASES = {
    # registry name: (fixture folder, checkpoint file, class name)
    "spidr_base": ("tiny_spidr", "checkpoint.pt", "SpidR"),
    "dinosr_base_reproduced": ("tiny_dinosr", "checkpoint.pt", "DinoSR"),
    "dinosr_base_original": ("tiny_dinosr_fairseq_original", "dinosr.ckpt", "DinoSR"),
}


def test_known_huberts_lists_the_official_sources() -> None:
    """Every released HuBERT is there (minimal_hubert's list included: mHuBERT-147 iterations,
    multilingual and other-language HuBERTs), with its official URL or HF id and a loader."""
    known = registry.known_huberts()
    expected_urls = {
        "hubert_base_ls960": "https://dl.fbaipublicfiles.com/hubert/hubert_base_ls960.pt",
        "hubert_large_ll60k": "https://dl.fbaipublicfiles.com/hubert/hubert_large_ll60k.pt",
        "hubert_xtralarge_ll60k": (
            "https://dl.fbaipublicfiles.com/hubert/hubert_xtralarge_ll60k.pt"
        ),
        "hubert_fairseq_base_ls960": (
            "https://download.pytorch.org/torchaudio/models/hubert_fairseq_base_ls960.pth"
        ),
        "hubert_fairseq_large_ll60k": (
            "https://download.pytorch.org/torchaudio/models/hubert_fairseq_large_ll60k.pth"
        ),
        "hubert_fairseq_xlarge_ll60k": (
            "https://download.pytorch.org/torchaudio/models/hubert_fairseq_xlarge_ll60k.pth"
        ),
        "facebook/hubert-base-ls960": "facebook/hubert-base-ls960",
        "utter-project/mHuBERT-147": "utter-project/mHuBERT-147",
        "utter-project/mHuBERT-147-base-1st-iter": "utter-project/mHuBERT-147-base-1st-iter",
        "utter-project/mHuBERT-147-base-2nd-iter": "utter-project/mHuBERT-147-base-2nd-iter",
        "mhubert_base_vp_en_es_fr_it3": (
            "https://dl.fbaipublicfiles.com/hubert/mhubert_base_vp_en_es_fr_it3.pt"
        ),
        "mhubert_base_vp_mls_cv_8lang_it3": (
            "https://dl.fbaipublicfiles.com/hubert/mhubert_base_vp_mls_cv_8lang_it3.pt"
        ),
        "s3prl/hubert_base_ls960": (
            "https://huggingface.co/s3prl/converted_ckpts/resolve/main/hubert_base_ls960.pt"
        ),
        "reazon-research/japanese-hubert-base-k2": "reazon-research/japanese-hubert-base-k2",
        "TencentGameMate/chinese-hubert-base": "TencentGameMate/chinese-hubert-base",
        "TencentGameMate/chinese-hubert-large": "TencentGameMate/chinese-hubert-large",
    }
    for name, source in expected_urls.items():
        assert known[name].source == source, name
    for entry in known.values():
        assert entry.source.startswith("https://") or "/" in entry.source
        assert entry.model_type == "hubert" and entry.loader == "HuBERT.from_pretrained"
        if entry.format == "torchaudio":  # torchaudio records neither heads nor pre-/post-LN
            assert {"num_heads", "layer_norm_first", "normalize_input"} <= set(entry.overrides)
    assert known["hubert_base_ls960"].normalize_input is False
    assert known["hubert_large_ll60k"].normalize_input is True
    known.clear()  # a copy: the registry itself is untouched
    assert registry.known_huberts()


@pytest.mark.parametrize("name", sorted(SPIDR_CASES))
def test_offline_error_names_url_and_manual_loader(tmp_path: Path, name: str) -> None:
    """Offline with an empty cache: DownloadError naming the official URL and the manual load."""
    entry = registry.SPIDR_CHECKPOINTS[name]
    load = getattr(registry, name)
    with pytest.raises(DownloadError) as raised:
        load(cache_dir=tmp_path, offline=True)
    message = str(raised.value)
    assert entry.source in message
    assert f"{SPIDR_CASES[name][2]}.from_pretrained('/path/to/" in message


def test_hubert_offline_errors(tmp_path: Path) -> None:
    """URL and HF-id entries fail offline with messages naming the source; unknown names too."""
    with pytest.raises(DownloadError, match=r"hubert_base_ls960\.pt") as raised:
        registry.hubert("hubert_base_ls960", cache_dir=tmp_path, offline=True)
    assert "HuBERT.from_pretrained" in str(raised.value)
    entry = registry.known_huberts()["facebook/hubert-base-ls960"]
    with pytest.raises(DownloadError, match="facebook/hubert-base-ls960"):
        entry.resolve(offline=True, hf_cache_dir=tmp_path / "empty-hf-cache")
    with pytest.raises(ConfigError, match="hubert_base_ls960"):
        registry.hubert("no_such_model")


def _mirror(monkeypatch: pytest.MonkeyPatch, name: str, url: str) -> None:
    entry = registry.SPIDR_CHECKPOINTS[name]
    monkeypatch.setitem(registry.SPIDR_CHECKPOINTS, name, dataclasses.replace(entry, source=url))


def _first_rows(fixture: Path) -> torch.Tensor:
    return load_file(fixture / "inputs.safetensors")["waveforms"]


@pytest.mark.parametrize("name", sorted(SPIDR_CASES))
def test_spidr_checkpoints_load_over_http(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fixtures_dir: Path, name: str
) -> None:
    """With the URL pointed at a loopback server holding the tiny fixture, the function
    downloads once, caches, and gives the same model as loading the fixture folder."""
    folder, filename, class_name = SPIDR_CASES[name]
    fixture = fixtures_dir / "spidr" / folder
    served = tmp_path / "served"
    served.mkdir()
    shutil.copy(fixture / filename, served / filename)  # alone: no config.json over HTTP
    config = json.loads((fixture / "config.json").read_text())
    heads = config.get("model", config)["encoder_num_heads"]
    import sslspeech

    cls: Any = getattr(sslspeech, class_name)
    reference = cls.from_pretrained(fixture / filename)
    load = getattr(registry, name)
    with serve(served) as server:
        _mirror(monkeypatch, name, server.url(filename))
        model = load(cache_dir=tmp_path / "cache", quiet=True, num_heads=heads)
        again = load(cache_dir=tmp_path / "cache", offline=True, num_heads=heads)
        assert server.requests == [f"/{filename}"], "the second call used the cache"
    assert type(model) is cls and type(again) is cls and not model.training
    reference_state = reference.state_dict()
    assert list(model.state_dict()) == list(reference_state)
    for key, value in model.state_dict().items():
        assert torch.equal(value, reference_state[key]), key
    waveforms = _first_rows(fixture)
    with torch.no_grad():
        assert torch.equal(model.encode(waveforms), reference.encode(waveforms))


def test_local_src_skips_the_download(fixtures_dir: Path, tmp_path: Path) -> None:
    """`spidr_base(src)` loads a local copy (e.g. downloaded by hand) without any cache."""
    fixture = fixtures_dir / "spidr" / "tiny_spidr"
    model = registry.spidr_base(fixture / "checkpoint.pt", cache_dir=tmp_path / "cache")
    assert type(model).__name__ == "SpidR"
    assert not (tmp_path / "cache").exists()


def test_hubert_by_name_over_http(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fixtures_dir: Path
) -> None:
    """`hubert(name)` downloads the named checkpoint (a fairseq .pt) and loads its encoder."""
    fixture = fixtures_dir / "hubert" / "fairseq_base_like"
    served = tmp_path / "served"
    served.mkdir()
    shutil.copy(fixture / "checkpoint.pt", served / "hubert_base_ls960.pt")
    import sslspeech

    reference = sslspeech.HuBERT.from_pretrained(fixture / "checkpoint.pt")
    entry = registry.known_huberts()["hubert_base_ls960"]
    with serve(served) as server:
        url = server.url("hubert_base_ls960.pt")
        monkeypatch.setitem(registry._HUBERTS, entry.name, dataclasses.replace(entry, source=url))
        model = registry.hubert("hubert_base_ls960", cache_dir=tmp_path / "cache", quiet=True)
    assert type(model) is sslspeech.HuBERT
    waveforms = load_file(fixture / "inputs.safetensors")["waveforms"]
    with torch.no_grad():
        assert torch.equal(model(waveforms), reference(waveforms))
