"""100 Hz labels end to end (fairseq's first iteration): MFCC features -> k-means -> units ->
`units merge --label-rate 100` -> HuBERT training with `model.label_rate = 100`, whose frame t
is trained on label 2t (fairseq `forward_targets`), i.e. on the 50 Hz merge's label t."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sslspeech.data.audio import load_audio
from sslspeech.data.manifest import read_manifest
from sslspeech.errors import DataError
from sslspeech.features import open_store
from sslspeech.features.extract import extract_features
from sslspeech.training import load_config, train
from sslspeech.units import merge, transcribe
from sslspeech.units.kmeans import fit_store
from tests.training.conftest import CONFIGS, single_thread, small_run
from tests.training.corpus import make_tone_corpus


@pytest.fixture(scope="module")
def labels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tone corpus, its MFCC k-means units, merged at 100 Hz and at 50 Hz."""
    folder = tmp_path_factory.mktemp("label_rate")
    manifest = make_tone_corpus(folder, num_utterances=8, min_frames=20, max_frames=40)
    features = extract_features(manifest, folder / "mfcc", quiet=True)
    fit_store(open_store(features), 8, fraction=1.0, seed=0).save(folder / "kmeans.safetensors")
    units = transcribe(features, folder / "kmeans.safetensors", folder / "units.jsonl", quiet=True)
    out = {"units": units, "manifest": manifest}
    for rate in (100, 50):
        out[f"l{rate}"] = folder / f"l{rate}.csv"
        merge(manifest, units, out[f"l{rate}"], from_mfcc=True, label_rate=float(rate))
    return out


def test_100_hz_model_trains_on_every_second_label(labels: dict[str, Path]) -> None:
    """The label_rate=100 model's targets for each utterance are the 50 Hz merge's labels."""
    from sslspeech.models.hubert import HuBERTPretrain

    config = load_config(
        CONFIGS / "tiny_hubert.toml", [f"data.manifest={labels['l100']}", "model.label_rate=100"]
    )
    model = HuBERTPretrain(config.model_config()).eval()
    halves = {entry.fileid: entry.units for entry in read_manifest(labels["l50"])}
    for entry in read_manifest(labels["l100"]):
        wav = torch.from_numpy(load_audio(entry))[None]
        with torch.no_grad():
            features, _ = model.encoder.extract(wav, None)
            features, targets = model.align_labels(features, torch.tensor([entry.units]))
        expected = torch.tensor(halves[entry.fileid])
        assert len(entry.units) > 1.9 * features.shape[1]
        assert torch.equal(targets[0], expected[: features.shape[1]])


def test_a_training_run_on_100_hz_labels(labels: dict[str, Path], tmp_path: Path) -> None:
    """Two steps on the 100 Hz manifest with model.label_rate=100 complete with a finite loss;
    the same labels with the default 50 Hz model are refused (durations disagree)."""
    overrides = small_run(tmp_path / "run", labels["l100"], "run.max_steps=2")
    with single_thread():
        summary = train(
            load_config(CONFIGS / "tiny_hubert.toml", [*overrides, "model.label_rate=100"])
        )
    assert summary["status"] == "completed" and summary["step"] == 2
    assert torch.isfinite(torch.tensor(summary["loss"]))
    with pytest.raises(DataError, match=r"labels at 50\.0 Hz"):
        train(
            load_config(CONFIGS / "tiny_hubert.toml", small_run(tmp_path / "r50", labels["l100"]))
        )


@pytest.mark.parametrize("rate", [100, 50])
def test_pipeline_merge_follows_the_model_label_rate(labels, tmp_path, rate):
    """The recipe's merge stage writes labels at the rate its training config's model expects
    (`it1.overrides."model.label_rate"`), from the MFCC units."""
    from sslspeech.pipeline.stage import StageContext
    from sslspeech.pipeline.tasks import merge_labels

    outputs = {name: tmp_path / f"{name}.csv" for name in ("train_labels", "val_labels")}
    context = StageContext(
        name="it1.merge",
        run_dir=tmp_path,
        inputs={
            "train": labels["manifest"],
            "val": labels["manifest"],
            "units": labels["units"],
            "config": CONFIGS / "tiny_hubert.toml",
        },
        outputs={**outputs, "targets": tmp_path / "targets.json"},
        params={"from_mfcc": True, "source": "mfcc", "overrides": {"model.label_rate": rate}},
    )
    assert merge_labels(context) == {"label_rate": float(rate)}
    written = [entry.units for entry in read_manifest(outputs["train_labels"])]
    assert written == [entry.units for entry in read_manifest(labels[f"l{rate}"])]
