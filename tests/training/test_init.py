"""Continued pretraining (`run.init_from`, `run.init_labels_from`): the architecture comes from
the source, matching tensors load, the rest starts fresh and is reported, a conflicting
architecture key is an error, a rerun resumes the run (not the init), centroids become label
embeddings through the final projection."""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

import pytest
import torch

from sslspeech.errors import ConfigError
from sslspeech.interop.hf import export_hf
from sslspeech.interop.native import save_directory
from sslspeech.models import HuBERT, SpidR, load_model
from sslspeech.models.configs import HuBERTConfig
from sslspeech.models.spidr import SpidRConfig
from sslspeech.training.config import TrainConfig, resolve_config
from sslspeech.training.distributed import resolve_environment
from sslspeech.training.init import label_embeddings
from sslspeech.training.trainer import Trainer
from sslspeech.units.kmeans import KMeans
from tests.training.conftest import small_run

CONV = ((16, 10, 5), (16, 3, 2), (16, 3, 2), (16, 3, 2), (16, 3, 2), (16, 2, 2), (16, 2, 2))
ENCODER = {
    "extractor_conv_layers": CONV,
    "embed_dim": 32,
    "ffn_dim": 32,
    "num_layers": 2,
    "num_heads": 2,
    "pos_conv_kernel": 8,
    "pos_conv_groups": 2,
}
NO_DROPOUT = ["model.dropout=0.0", "model.attention_dropout=0.0", "model.layer_drop=0.0"]


def config(workdir: Path, manifest: Path, model_type: str, *extra: str) -> TrainConfig:
    """A run whose [model] section sets no architecture key."""
    overrides = [f"model.type={model_type}", "run.max_steps=2", "checkpoint.save_every=2",
                 "data.num_workers=0", "data.num_buckets=4", "run.device=cpu"]  # fmt: skip
    return resolve_config({}, small_run(workdir, manifest, *overrides, *NO_DROPOUT, *extra))


def trainer(run: TrainConfig) -> Trainer:
    return Trainer(run, resolve_environment("cpu", {}))


@pytest.fixture(scope="module")
def hf_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny HuBERT encoder written as a transformers HubertModel directory."""
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("hf") / "tiny_hubert"
    export_hf(HuBERT(HuBERTConfig(**ENCODER)), directory)
    return directory


@pytest.fixture(scope="module")
def spidr_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny SpidR (2 codebooks of 8) saved with save_pretrained."""
    torch.manual_seed(1)
    directory = tmp_path_factory.mktemp("spidr") / "tiny_spidr"
    SpidR(SpidRConfig(**ENCODER, num_codebooks=2, codebook_size=8)).save_pretrained(directory)
    return directory


def test_an_hf_encoder_starts_hubert_pretraining_with_a_new_k(
    hf_encoder: Path, tone_manifest: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Architecture and encoder weights from the HF directory; the heads of K=12 start fresh;
    the table names them; optimizer and schedule start at step 0; two steps train."""
    source = load_model(hf_encoder).state_dict()
    run = config(tmp_path, tone_manifest, "hubert_pretrain", f"run.init_from={hf_encoder}",
                 "model.num_classes=12", "model.final_dim=16")  # fmt: skip
    with caplog.at_level(logging.INFO, logger="sslspeech.training.trainer"):
        new = trainer(run)
    model = new.model
    assert (model.config.embed_dim, model.config.num_layers, model.config.num_classes) == (
        32,
        2,
        12,
    )
    assert tuple(model.label_embeddings.shape) == (4 + 12, 16)
    for name, tensor in source.items():
        assert torch.equal(model.state_dict()[name], tensor), name
    table = caplog.text
    assert f"{len(source)} tensors loaded, 4 initialized, 0 dropped" in table
    for name, count in (("mask_embedding", 1), ("final_proj.weight", 1), ("label_embeddings", 1)):
        assert re.search(rf"initialized +{re.escape(name)} +{count}  not in the checkpoint", table)
    loaded = sum(name.startswith("encoder.transformer.") for name in source)
    assert re.search(rf"loaded +encoder\.transformer\.\* +{loaded}\n", table)
    assert new.state.step == 0 and not new.optimizer.state
    assert new.fit()["step"] == 2


def test_a_spidr_checkpoint_starts_a_run_with_new_codebooks_or_hubert_heads(
    spidr_source: Path, tone_manifest: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SpidR (by file:// URL) -> SpidR with codebooks of 16: encoder and teacher loaded, heads
    and codebooks fresh; SpidR -> HuBERT: its encoder loads, teacher, heads and codebooks are
    dropped, and a warning says SpidR was trained on standardized waveforms."""
    source = load_model(spidr_source).state_dict()
    url = spidr_source.as_uri()  # a URL goes through the hub resolver, as a remote one would
    run = config(tmp_path / "a", tone_manifest, "spidr", f"run.init_from={url}",
                 "model.codebook_size=16", "model.num_codebooks=2")  # fmt: skip
    model = trainer(run).model
    own = model.state_dict()
    assert model.config.pos_conv_depth == 5 and not model.config.qkv_bias  # SpidR's own
    for name, tensor in source.items():
        fits = own[name].shape == tensor.shape
        assert fits == (not name.startswith(("heads.", "codebooks."))), name
        assert not fits or torch.equal(own[name], tensor), name
    run = config(tmp_path / "b", tone_manifest, "hubert_pretrain", f"run.init_from={spidr_source}")
    with caplog.at_level(logging.WARNING, logger="sslspeech.training.init"):
        hubert = trainer(run).model
    assert "trained with normalize_input=True, this run has data.normalize=False" in caplog.text
    assert hubert.config.pos_conv_depth == 5 and hubert.config.extractor_mode == "layer_norm"
    for name, tensor in hubert.state_dict().items():
        if name.startswith("encoder."):
            assert torch.equal(tensor, source[name]), name


def test_the_report_lists_loaded_initialized_dropped_and_a_missing_teacher_copies_the_student(
    spidr_source: Path, tmp_path: Path
) -> None:
    """`initialize` on a SpidR source without its teacher into DinoSR: the teacher becomes a
    copy of the loaded student; source tensors DinoSR lacks are dropped."""
    from sslspeech.interop import load_checkpoint
    from sslspeech.models import DinoSR
    from sslspeech.models.dinosr import DinoSRConfig
    from sslspeech.training.init import initialize

    loaded = load_checkpoint(spidr_source)
    state = {k: v for k, v in loaded.state_dict.items() if not k.startswith("teacher.")}
    state["extra.weight"] = torch.zeros(1)
    save_directory(tmp_path / "student", "spidr", loaded.config, state)
    student = load_checkpoint(tmp_path / "student")
    model = DinoSR(DinoSRConfig(**ENCODER, num_codebooks=2, codebook_size=8))
    report = initialize(model, student, "student")
    assert report.dropped == ["extra.weight"]
    teacher = {k: v for k, v in report.initialized.items() if k.startswith("teacher.")}
    assert teacher and set(teacher.values()) == {"copy of the student's encoder.transformer.*"}
    for name in teacher:
        twin = "encoder.transformer." + name.removeprefix("teacher.")
        assert torch.equal(model.state_dict()[name], state[twin])
    assert set(report.loaded) | set(report.initialized) == set(model.state_dict())
    lines = report.table().splitlines()
    assert lines[0].startswith("run.init_from student (native, spidr): ")
    assert re.search(r"dropped +extra\.weight +1  not in the new model", report.table())
    assert re.search(r"initialized +teacher\.layers\.\* +\d+  copy of the student", lines[-2])


def test_an_architecture_key_that_differs_from_the_checkpoint_is_an_error(
    hf_encoder: Path, tone_manifest: Path, tmp_path: Path
) -> None:
    """[model] num_layers = 3 against a checkpoint of 2 layers names both values; an equal
    value and a training-only key (dropout) are fine."""
    init = f"run.init_from={hf_encoder}"
    run = config(tmp_path, tone_manifest, "hubert_pretrain", init, "model.num_layers=3")
    with pytest.raises(ConfigError, match=r"model.num_layers = 3 but the checkpoint has 2"):
        trainer(run)
    run = config(tmp_path, tone_manifest, "hubert_pretrain", init, "model.num_layers=2")
    assert trainer(run).model.config.dropout == 0.0


def test_a_rerun_resumes_the_run_and_does_not_read_the_init_source_again(
    hf_encoder: Path, tone_manifest: Path, tmp_path: Path
) -> None:
    """After 2 steps from a copy of the source, the copy is deleted: the rerun resumes at
    step 2 with the checkpoint's weights and trains on."""
    copy = tmp_path / "source"
    shutil.copytree(hf_encoder, copy)
    workdir = tmp_path / "run"
    run = config(workdir, tone_manifest, "hubert_pretrain", f"run.init_from={copy}")
    first = trainer(run)
    first.fit()
    trained = {k: v.clone() for k, v in first.model.state_dict().items()}
    shutil.rmtree(copy)
    again = trainer(run.replace(**{"run.max_steps": 4}))
    assert again.state.step == 2
    for name, tensor in again.model.state_dict().items():
        assert torch.equal(tensor, trained[name]), name
    assert again.fit()["step"] == 4


def test_label_embeddings_start_as_the_projected_centroids(
    hf_encoder: Path, tone_manifest: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Rows 4 + k are final_proj(c_k) and the table says so; centroids of another width, or a
    model without label embeddings, are an error."""
    centroids = torch.randn(12, 32)
    KMeans(centroids).save(tmp_path / "km.safetensors")
    labels = f"run.init_labels_from={tmp_path / 'km.safetensors'}"
    init = f"run.init_from={hf_encoder}"
    run = config(tmp_path, tone_manifest, "hubert_pretrain", init, labels, "model.num_classes=12")
    with caplog.at_level(logging.INFO, logger="sslspeech.training.trainer"):
        model = trainer(run).model
    with torch.no_grad():
        expected = model.final_proj(centroids)
    torch.testing.assert_close(model.label_embeddings[4:].detach(), expected)
    assert re.search(r"initialized +label_embeddings +1  projected centroids of .*km", caplog.text)
    KMeans(torch.randn(12, 7)).save(tmp_path / "km.safetensors")
    with pytest.raises(ConfigError, match=r"centroids of shape \(12, 7\), expected .*\(12, 32\)"):
        trainer(run)
    with pytest.raises(ConfigError, match=r"only HuBERT pretraining .* a Linear has none"):
        label_embeddings(torch.nn.Linear(2, 2), centroids, "km")


def test_paths_are_checked_before_the_run_but_hub_ids_and_urls_are_not(
    tone_manifest: Path, tmp_path: Path
) -> None:
    """`check_paths` names a missing local `run.init_from` or centroid file; an HF id or a URL
    is left to the loader."""
    from sslspeech.training.config import check_paths

    for remote in ("facebook/hubert-base-ls960", "https://example.org/hubert.pt"):
        check_paths(config(tmp_path, tone_manifest, "hubert_pretrain", f"run.init_from={remote}"))
    missing = config(tmp_path, tone_manifest, "hubert_pretrain",
                     f"run.init_from={tmp_path / 'nope.pt'}",
                     f"run.init_labels_from={tmp_path / 'km.safetensors'}")  # fmt: skip
    with pytest.raises(ConfigError, match=r"run.init_labels_from: no such file .*km.safetensors"):
        check_paths(missing)
    with pytest.raises(ConfigError, match=r"run.init_from: no such file or directory .*nope.pt"):
        check_paths(missing)


def test_init_fresh_redraws_tensors_the_checkpoint_has(tmp_path: Path) -> None:
    """Same K, new labels: `run.init_fresh = ["label_embeddings"]` keeps them out of the load."""
    from sslspeech.interop import load_checkpoint
    from sslspeech.models import HuBERTPretrain
    from sslspeech.models.configs import HuBERTPretrainConfig
    from sslspeech.training.init import initialize

    config = HuBERTPretrainConfig(**ENCODER, num_classes=12, final_dim=16)
    HuBERTPretrain(config).save_pretrained(tmp_path / "it1")
    source = load_checkpoint(tmp_path / "it1")
    model = HuBERTPretrain(config)
    report = initialize(model, source, "it1", fresh=("label_embeddings",))
    assert report.initialized == {"label_embeddings": "run.init_fresh"}
    assert not torch.equal(model.label_embeddings, source.state_dict["label_embeddings"])
    assert torch.equal(model.final_proj.weight, source.state_dict["final_proj.weight"])
