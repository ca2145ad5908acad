"""hubconf.py: torch.hub.load(repo, ..., source="local") gives our models."""

from __future__ import annotations

import dataclasses
import importlib.util
import shutil
import sys
from pathlib import Path

import pytest
import torch

from sslspeech.interop import registry
from sslspeech.utils.safetensors import load_file
from tests.interop.loopback import serve

REPO = Path(__file__).resolve().parents[1]


def test_entry_points_are_listed() -> None:
    """The entry points torch.hub would list (public callables), none of hubconf's helpers."""
    spec = importlib.util.spec_from_file_location("hubconf_under_test", REPO / "hubconf.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    entries = {n for n in dir(module) if callable(getattr(module, n)) and not n.startswith("_")}
    assert module.dependencies == ["torch", "numpy"]
    assert {
        "hubert",
        "spidr_base",
        "dinosr_base_reproduced",
        "dinosr_base_original",
        "load_model",
    } <= entries
    assert not {"Path", "Any", "sys"} & entries
    assert "_add_to_sys_path" not in (REPO / "hubconf.py").read_text()


def test_spidr_base_through_torch_hub(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fixtures_dir: Path
) -> None:
    """torch.hub.load(repo, "spidr_base") downloads (from a loopback mirror) and loads SpidR
    with the CPU inference fast paths, computing what the fixture loaded directly computes;
    sys.path is left as it was."""
    fixture = fixtures_dir / "spidr" / "tiny_spidr"
    served = tmp_path / "served"
    served.mkdir()
    shutil.copy(fixture / "checkpoint.pt", served / "spidr_base.pt")
    path_before = list(sys.path)
    entry = registry.SPIDR_CHECKPOINTS["spidr_base"]
    with serve(served) as server:
        mirrored = dataclasses.replace(entry, source=server.url("spidr_base.pt"))
        monkeypatch.setitem(registry.SPIDR_CHECKPOINTS, "spidr_base", mirrored)
        model = torch.hub.load(
            str(REPO),
            "spidr_base",
            source="local",
            cache_dir=tmp_path / "cache",
            quiet=True,
            num_heads=4,
        )
    assert sys.path == path_before
    import sslspeech
    from sslspeech.models.cpu_inference import TiledConvFeatureExtractor

    reference = sslspeech.SpidR.from_pretrained(fixture)
    assert type(model) is sslspeech.SpidR
    assert isinstance(model.encoder.feature_extractor, TiledConvFeatureExtractor)
    waveforms = load_file(fixture / "inputs.safetensors")["waveforms"]
    with torch.no_grad():
        torch.testing.assert_close(model.encode(waveforms), reference.encode(waveforms))


def test_load_model_through_torch_hub(fixtures_dir: Path) -> None:
    """The generic entry point reads a local checkpoint of any supported format."""
    fixture = fixtures_dir / "hubert" / "fairseq_base_like" / "checkpoint.pt"
    model = torch.hub.load(str(REPO), "load_model", source="local", src=str(fixture))
    assert type(model).__name__ in ("HuBERT", "HuBERTPretrain") and not model.training
