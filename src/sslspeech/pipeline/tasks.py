"""The stage functions: each reads its inputs and writes its outputs by calling the library
(synth, data, features, units, evaluation, training); none holds recipe logic of its own."""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sslspeech.errors import DataError, SSLSpeechError
from sslspeech.pipeline.stage import StageContext
from sslspeech.pipeline.state import fingerprint
from sslspeech.utils.fileio import atomic_open

log = logging.getLogger(__name__)

Results = Mapping[str, Any]

UTTERANCES_PER_SHARD = 5000
"""Without `[executor] shards`: LibriSpeech 960 h (281k utterances) is cut into 57 shards."""


def write_json(path: Path, data: Any) -> None:
    with atomic_open(path) as handle:
        json.dump(data, handle, indent=2)
        handle.write("\n")


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def checkpoint_of(path: Path) -> Path:
    """A checkpoint path, or the one a `best.json` names."""
    if path.suffix == ".json":
        return Path(read_json(path)["checkpoint"])
    return path


def layer_of(context: StageContext) -> int:
    """The layer: a parameter, or the best layer of an ABX JSON input."""
    if "layer" in context.params:
        return int(context.params["layer"])
    return int(read_json(context.inputs["layer"])["best_layer"])


# ---------------------------------------------------------------------- corpus and manifests


def make_synthetic_corpus(context: StageContext) -> Results:
    """The espeak-ng corpus (make_corpus redoes a partial one and keeps a complete one)."""
    from sslspeech.data.manifest import read_manifest
    from sslspeech.synth import make_corpus

    params = context.params
    make_corpus(
        context.outputs["manifest"].parent,
        speakers=params["speakers"],
        utterances=params["utterances"],
        seed=params["seed"],
    )
    manifest = read_manifest(context.outputs["manifest"])
    seconds = sum(entry.num_samples for entry in manifest) / 16000
    return {"utterances": len(manifest), "minutes": round(seconds / 60, 2)}


def build_manifest(context: StageContext) -> Results:
    from sslspeech.data.scan import create_manifest

    report = create_manifest(
        context.inputs["audio"], context.outputs["manifest"], ext=context.params["extension"]
    )
    if report.written == 0:
        raise DataError(f"{context.inputs['audio']}: no {context.params['extension']} audio found")
    return {"utterances": report.written}


def _held_out(fileid: str, fraction: float, seed: int) -> bool:
    """Deterministic per utterance, independent of the manifest's order."""
    digest = hashlib.sha256(f"{seed}:{fileid}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def split_manifest(context: StageContext) -> Results:
    """train/val/all manifests: the given validation manifest, or a held-out fraction."""
    from sslspeech.data.manifest import read_manifest, write_manifest

    entries = list(read_manifest(context.inputs["manifest"]))
    if "val_manifest" in context.inputs:
        train, val = entries, list(read_manifest(context.inputs["val_manifest"]))
    else:
        fraction, seed = context.params["val_fraction"], context.params["seed"]
        val = [e for e in entries if _held_out(e.fileid, fraction, seed)]
        train = [e for e in entries if not _held_out(e.fileid, fraction, seed)]
        if not val or not train:
            raise DataError(
                f"{context.inputs['manifest']}: {len(entries)} utterances cannot be split into "
                f"training and validation with val_fraction={fraction}; add utterances or set "
                "[corpus] val_manifest"
            )
    write_manifest(train, context.outputs["train"])
    write_manifest(val, context.outputs["val"])
    write_manifest([*train, *val], context.outputs["all"])
    return {"utterances": len(train) + len(val), "train": len(train), "val": len(val)}


# ---------------------------------------------------------------------- features and units


def shard_count(context: StageContext) -> int:
    """Shards of a per-utterance stage: `[executor] shards` (the `shards` parameter) when set,
    else one per `UTTERANCES_PER_SHARD` utterances of its manifest or feature store."""
    configured = context.params.get("shards")
    if configured is not None:
        return int(configured)
    if "manifest" in context.inputs:
        from sslspeech.data.manifest import read_manifest

        utterances = len(read_manifest(context.inputs["manifest"]))
    else:
        from sslspeech.features import open_store

        utterances = len(open_store(context.inputs["features"]))
    return max(1, math.ceil(utterances / UTTERANCES_PER_SHARD))


def _sharding(context: StageContext) -> dict[str, Any]:
    """The shard keyword arguments of `extract_features` / `transcribe` for this context."""
    return {"shard": context.shard, "num_shards": context.num_shards, "device": context.device}


def extract_mfcc(context: StageContext) -> Results:
    from sslspeech.features.extract import extract_features

    extract_features(
        context.inputs["manifest"], context.outputs["features"], kind="mfcc", **_sharding(context)
    )
    return {}


def extract_layer_features(context: StageContext) -> Results:
    from sslspeech.features.extract import extract_features

    layer = layer_of(context)
    checkpoint = checkpoint_of(context.inputs["checkpoint"])
    extract_features(
        context.inputs["manifest"],
        context.outputs["features"],
        kind="model",
        checkpoint=checkpoint,
        layer=layer,
        before_residual=bool(context.params["before_residual"]),
        **_sharding(context),
    )
    return {"layer": layer}


def fit_kmeans(context: StageContext) -> Results:
    """k-means on the features, as one job of `context.processes` (local workers, or this
    process as one task of the stage's SLURM job); rank 0 saves."""
    from sslspeech.launch.kmeans import KMeansRun, fit

    params = context.params
    settings = KMeansRun(
        features=str(context.inputs["features"]),
        out=str(context.outputs["kmeans"]),
        k=params["k"],
        fraction=params["fraction"],
        seed=params["seed"],
        device=context.device,
    )
    report = fit(settings, context.processes)
    return {
        "k": params["k"],
        "processes": int(report["world_size"]),
        "iterations": int(report["iterations"]),
        "inertia": float(report["inertia"]),
    }


def transcribe_units(context: StageContext) -> Results:
    from sslspeech.units import transcribe

    transcribe(
        context.inputs["features"],
        context.inputs["kmeans"],
        context.outputs["units"],
        **_sharding(context),
    )
    return {}


def merge_labels(context: StageContext) -> Results:
    """The training and validation manifests with the units as labels, at the label rate of the
    iteration's model (50 Hz; 100 Hz MFCC labels with `model.label_rate = 100`)."""
    from sslspeech.units import merge

    rate = label_rate_of(context)
    for split in ("train", "val"):
        merge(
            context.inputs[split],
            context.inputs["units"],
            context.outputs[f"{split}_labels"],
            from_mfcc=bool(context.params["from_mfcc"]),
            label_rate=rate,
        )
    write_json(context.outputs["targets"], {"source": context.params["source"], "label_rate": rate})
    return {"label_rate": rate}


def label_rate_of(context: StageContext) -> float:
    """Labels per second of the training config `inputs["config"]` with `params["overrides"]`
    (`model.label_rate`; none means one label per 50 Hz frame)."""
    from sslspeech.training import load_config

    changes = {**context.params["overrides"], "data.manifest": str(context.inputs["train"])}
    source = f"the recipe's {context.name.split('.')[0]}.overrides"
    config = load_config(context.inputs["config"], changes=changes, changes_from=source)
    rate = config.model_config().label_rate
    return 50.0 if rate is None else float(rate)


def unit_quality(context: StageContext) -> Results:
    """PNMI, purities, perplexity, bitrate of the units against the phone alignments, and the
    P(phone | unit) heatmap."""
    from sslspeech.evaluation import quality

    units = quality.read_units(context.inputs["units"])
    rate = float(context.params["frequency"])
    joint = quality.joint_counts(
        units, quality.read_alignments(context.inputs["alignments"]), unit_rate=rate
    )
    scores = {**quality.quality_from_counts(joint), **quality.bitrate(units, rate)}
    title = f"P(phone | unit): {context.name.split('.')[0]} units"
    quality.plot_phone_unit_heatmap(joint, context.outputs["heatmap"], title=title)
    write_json(context.outputs["scores"], scores)
    return {"pnmi": scores["pnmi"]}


# ---------------------------------------------------------------------- evaluation


def _abx_options(params: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "speaker": params["speaker"],
        "context": params["context"],
        "max_size_group": params["max_size_group"],
        "max_x_across": params["max_x_across"],
        "seed": params["seed"],
    }


def score_abx_features(context: StageContext) -> Results:
    from sslspeech.evaluation import abx

    params = context.params
    score = abx(
        context.inputs["item"],
        context.inputs["features"],
        frequency=params["frequency"],
        **_abx_options(params),
        device=context.device,
    )
    write_json(context.outputs["scores"], {"abx": score, **_abx_options(params)})
    return {"abx": score}


def _item_audio(items: Any, manifest: Path) -> dict[str, Path]:
    """Audio file of every utterance of the item file, from the manifest."""
    from sslspeech.data.manifest import read_manifest

    entries = {entry.fileid: entry for entry in read_manifest(manifest)}
    missing = [fileid for fileid in items.fileids if fileid not in entries]
    if missing:
        raise DataError(
            f"{len(missing)} file(s) of the item file are not in {manifest} (first: {missing[0]})"
        )
    archived = [fileid for fileid in items.fileids if entries[fileid].archive is not None]
    if archived:
        raise DataError(f"ABX per layer reads audio files; {archived[0]} is inside a tar")
    return {fileid: Path(entries[fileid].path) for fileid in dict.fromkeys(items.fileids)}


def score_abx_layers(context: StageContext) -> Results:
    """ABX of every layer (or the listed ones) of a checkpoint; the best layer is the lowest."""
    from sslspeech.evaluation import abx, read_items
    from sslspeech.evaluation.layers import layer_features, model_frame_rate
    from sslspeech.models import load_model

    params = context.params
    checkpoint = checkpoint_of(context.inputs["checkpoint"])
    model: Any = load_model(checkpoint)
    layers = list(params["layers"]) or list(range(1, model.num_layers + 1))
    items = read_items(context.inputs["item"])
    audio = _item_audio(items, context.inputs["manifest"])
    before_residual = bool(params["before_residual"])
    features = layer_features(
        model, audio, layers, before_residual=before_residual, device=context.device
    )
    rate = model_frame_rate(model)
    scores = {
        layer: abx(items, features[layer], rate, **_abx_options(params), device=context.device)
        for layer in layers
    }
    del features
    layers = [{"layer": layer, "abx": score} for layer, score in sorted(scores.items())]
    best = min(layers, key=lambda entry: entry["abx"])
    write_json(
        context.outputs["scores"],
        {
            "checkpoint": str(checkpoint),
            "layers": layers,
            "best_layer": best["layer"],
            "best_abx": best["abx"],
            "before_residual": before_residual,
            **_abx_options(params),
        },
    )
    return {"best_layer": best["layer"], "abx": best["abx"]}


# ---------------------------------------------------------------------- training


def training_config(context: StageContext) -> Any:
    """The training config of a train stage: its TOML, the recipe's overrides, our paths."""
    from sslspeech.pipeline.recipe import iteration_training_config

    return iteration_training_config(
        context.inputs["config"],
        context.params["overrides"],
        workdir=context.params["workdir"],
        manifest=str(context.inputs["train"]),
        val_manifest=str(context.inputs["val"]),
        source=f"the recipe's {context.name.split('.')[0]}.overrides",
    )


def _training_results(summary: Mapping[str, Any], workdir: str) -> Results:
    if summary["status"] != "completed":
        raise SSLSpeechError(
            f"training in {workdir} stopped at step {summary['step']} ({summary['status']}); "
            "rerun the pipeline to resume it"
        )
    return {"step": summary["step"], "loss": summary["loss"]}


def train_model(context: StageContext) -> Results:
    """One pretraining run in this process; a rerun after a crash resumes from `last.pt`."""
    from sslspeech.training import train

    return _training_results(train(training_config(context)), context.params["workdir"])


def train_model_on_slurm(context: StageContext, options: Any) -> Results:
    """The same run as a SLURM job of the training launcher (N nodes x G GPUs, requeued on
    preemption); waits for it. `options` is a `sslspeech.launch.slurm.SlurmOptions`."""
    from sslspeech.launch.slurm import submit_training as submit

    job = submit(training_config(context), options)
    log.info("stage %s: training job %s", context.name, job.job_id)
    return _training_results(job.result(), context.params["workdir"])


def validate_checkpoints(context: StageContext) -> Results:
    """Validation loss of every saved checkpoint (appended, so a rerun continues); best.json
    names the lowest."""
    from sslspeech.training import validate

    checkpoints = Path(context.params["workdir"]) / "checkpoints"
    records = validate(
        context.inputs["val"], checkpoints, context.outputs["scores"], device=context.device
    )
    best = min(records, key=lambda record: record["loss"])
    path = str(checkpoints / best["checkpoint"])
    # The checkpoint's fingerprint makes best.json change whenever the file does, so the stages
    # reading best.json rerun after a retraining even when the path and loss look the same.
    record = {"checkpoint": path, "val_loss": best["loss"], "step": best["step"]}
    write_json(context.outputs["best"], {**record, "fingerprint": fingerprint(Path(path))})
    return {"best_checkpoint": path, "val_loss": best["loss"], "step": best["step"]}
