"""Codebook units of SpidR/DinoSR (`transcribe --checkpoint`): the argmax of the student's
prediction at that layer, in manifest order, sharded like k-means transcription; clear errors
for a checkpoint without codebooks or a layer without one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sslspeech.cli import main
from sslspeech.data.audio import load_audio, standardize
from sslspeech.errors import ConfigError
from sslspeech.features.batching import length_batches
from sslspeech.units import transcribe_codebooks
from sslspeech.units.codebooks import batched_codebook_posteriors
from tests.codebook_models import tiny_codebook_model

FILES = ("f1_s00", "m1_s01", "f4_s02", "m3_s03")


@pytest.fixture
def manifest(abx_wav: Path, tmp_path: Path) -> Path:
    """A CSV manifest of 4 fixture utterances."""
    import soundfile as sf

    rows = ["fileid,path,num_samples"]
    rows += [f"{f},{abx_wav / f'{f}.wav'},{sf.info(abx_wav / f'{f}.wav').frames}" for f in FILES]
    path = tmp_path / "manifest.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture
def abx_wav(fixtures_dir: Path) -> Path:
    return fixtures_dir / "abx" / "synthetic_phones" / "wav"


def expected_units(model, abx_wav: Path, codebook: int) -> dict[str, list[int]]:
    """Argmax of `get_codebooks` on the standardized waveform, computed here directly."""
    out = {}
    with torch.inference_mode():
        for f in FILES:
            wav = standardize(torch.from_numpy(load_audio(abx_wav / f"{f}.wav")))
            out[f] = model.get_codebooks(wav[None])[codebook][0].argmax(-1).tolist()
    return out


@pytest.mark.parametrize(
    ("model_type", "normalize_input"), [("spidr", True), ("dinosr", True), ("spidr", False)]
)
@pytest.mark.parametrize("batch_samples", [None, 12000])
def test_batched_posteriors_equal_one_at_a_time(model_type, normalize_input, batch_samples):
    """Mixed lengths (0 frames, exactly 1 frame, long) in length-sorted padded batches: every
    utterance once, each asked layer's posteriorgram within 1e-5 of the utterance's own
    `get_codebooks` (standardized as the checkpoint says), argmax units identical; a 12000-sample
    budget makes 4 batches (one of 3 rows)."""
    model = tiny_codebook_model(model_type, normalize_input=normalize_input)
    rng = torch.Generator().manual_seed(0)
    lengths = [1234, 399, 8000, 400, 5000, 8000, 0, 2999, 4000]
    waveforms = [(0.1 * torch.randn(n, generator=rng) + 0.05).numpy() for n in lengths]
    valid = [n for n in lengths if n >= 400]
    assert len(length_batches(valid, 12000)) == 4
    found = list(batched_codebook_posteriors(model, waveforms, [3, 2], batch_samples=batch_samples))
    assert sorted(index for index, _ in found) == list(range(len(lengths)))
    for index, posteriors in found:
        assert list(posteriors) == [3, 2]
        wav = torch.from_numpy(waveforms[index])
        if len(wav) < 400:
            assert [tuple(p.shape) for p in posteriors.values()] == [(0, 8), (0, 8)]
            continue
        with torch.inference_mode():
            alone = model.get_codebooks((standardize(wav) if normalize_input else wav)[None])
        for layer, codebook in ((3, 1), (2, 0)):
            expected = alone[codebook][0]
            torch.testing.assert_close(posteriors[layer], expected, atol=1e-5, rtol=1e-5)
            assert torch.equal(posteriors[layer].argmax(-1), expected.argmax(-1))
    units = {i: p[3].argmax(-1) for i, p in found if len(waveforms[i]) >= 400}
    assert len(torch.cat(list(units.values())).unique()) > 1


@pytest.mark.parametrize("model_type", ["spidr", "dinosr"])
def test_units_are_codebook_argmax(model_type, manifest, abx_wav, tmp_path):
    """Layer 3 of 3 is codebook 1 (layers 2, 3 have codebooks): JSONL in manifest order equal to
    the argmax of the prediction; 3 shards with a 4000-sample budget (every utterance a batch
    and a window of its own) give the same bytes; .km holds the same units."""
    model = tiny_codebook_model(model_type, tmp_path / "model")
    out = transcribe_codebooks(manifest, tmp_path / "model", 3, tmp_path / "u.jsonl", quiet=True)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    expected = expected_units(model, abx_wav, 1)
    assert [line["fileid"] for line in lines] == list(FILES)
    assert {line["fileid"]: line["units"] for line in lines} == expected
    assert len({u for units in expected.values() for u in units}) > 1
    sharded = transcribe_codebooks(
        manifest,
        tmp_path / "model",
        3,
        tmp_path / "s.jsonl",
        num_shards=3,
        batch_samples=4000,
        quiet=True,
    )
    assert sharded.read_bytes() == out.read_bytes()
    km = transcribe_codebooks(manifest, tmp_path / "model", 3, tmp_path / "u.km", km=True)
    assert km.read_text().splitlines() == [" ".join(map(str, expected[f])) for f in FILES]


def test_cli_and_single_shard_jobs(manifest, abx_wav, tmp_path, capsys):
    """`transcribe --checkpoint C --layer 2 --batch-samples 81000 MANIFEST OUT` (codebook 0;
    each shard's 2 utterances one padded batch); --shard i/n jobs join."""
    model = tiny_codebook_model("spidr", tmp_path / "model")
    out = tmp_path / "units.jsonl"
    for shard in ("1/2", "0/2"):
        args = ["transcribe", "--checkpoint", str(tmp_path / "model"), "--layer", "2"]
        args += ["--batch-samples", "81000", "--shard", shard, "--quiet"]
        assert main([*args, str(manifest), str(out)]) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert {line["fileid"]: line["units"] for line in lines} == expected_units(model, abx_wav, 0)


def test_errors_name_the_layers(manifest, tmp_path, capsys):
    """A layer without a codebook names the layers that have one; a HuBERT checkpoint is
    refused; the k-means form without a k-means model, or with --batch-samples, is a usage
    error (exit 1); a batch budget below one sample is refused."""
    from tests.evaluation.test_cli import tiny_hubert

    tiny_codebook_model("spidr", tmp_path / "spidr")
    with pytest.raises(ConfigError, match=r"layer\(s\) \[1\] have no codebook.*layers 2\.\.3"):
        transcribe_codebooks(manifest, tmp_path / "spidr", 1, tmp_path / "u.jsonl")
    tiny_hubert(tmp_path / "hubert")
    with pytest.raises(ConfigError, match="'hubert' model; codebook units need a SpidR or DinoSR"):
        transcribe_codebooks(manifest, tmp_path / "hubert", 2, tmp_path / "u.jsonl")
    assert main(["transcribe", str(manifest), str(tmp_path / "u.jsonl")]) == 1
    assert "FEATURES KMEANS OUT" in capsys.readouterr().err
    assert main(["transcribe", "FEATS", "KM", "u.jsonl", "--batch-samples", "8000"]) == 1
    assert "--batch-samples sizes the model batches of --checkpoint" in capsys.readouterr().err
    with pytest.raises(ConfigError, match=r"batch_samples must be >= 1 \(--batch-samples\)"):
        transcribe_codebooks(manifest, tmp_path / "spidr", 2, tmp_path / "u.jsonl", batch_samples=0)
    args = ["transcribe", "--checkpoint", str(tmp_path / "spidr"), str(manifest), "o.jsonl"]
    assert main(args) == 1
    assert "--layer" in capsys.readouterr().err


def test_parts_of_another_checkpoint_are_redone(manifest, abx_wav, tmp_path):
    """A shard written with one checkpoint, then the checkpoint rewritten (retrained): the
    stale part is removed and every unit comes from the new weights."""
    import time

    tiny_codebook_model("spidr", tmp_path / "model")
    out = tmp_path / "units.jsonl"
    transcribe_codebooks(manifest, tmp_path / "model", 3, out, shard=0, num_shards=2, quiet=True)
    time.sleep(0.01)
    torch.manual_seed(1)
    model = tiny_codebook_model("spidr", None)
    with torch.no_grad():
        model.heads.weight.normal_(0, 3.0)
    model.save_pretrained(tmp_path / "model")
    transcribe_codebooks(manifest, tmp_path / "model", 3, out, shard=1, num_shards=2, quiet=True)
    assert not out.exists()  # part 0 was stale: removed, not joined
    transcribe_codebooks(manifest, tmp_path / "model", 3, out, shard=0, num_shards=2, quiet=True)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert {line["fileid"]: line["units"] for line in lines} == expected_units(model, abx_wav, 1)
