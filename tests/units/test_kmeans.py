"""Our torch k-means against scikit-learn on the same data (inertia, predictions), seeding,
empty clusters, chunking, saving, and importing scikit-learn/fairseq joblib models safely."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from sslspeech.errors import DataError, UnsafePickleError
from sslspeech.units import KMeans, fit_store
from sslspeech.units.kmeans import assign, lloyd

sklearn_cluster = pytest.importorskip("sklearn.cluster")


@pytest.fixture(scope="module")
def blobs() -> np.ndarray:
    """3000 points in 8 dims around 12 centres of different spreads (float32)."""
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=4.0, size=(12, 8))
    labels = rng.integers(0, 12, size=3000)
    spread = rng.uniform(0.5, 1.5, size=(12, 1))
    return (centres[labels] + spread[labels] * rng.normal(size=(3000, 8))).astype(np.float32)


def test_lloyd_inertia_matches_sklearn(blobs):
    """Best of 3 runs: inertia within 1% of scikit-learn's KMeans (also best of 3)."""
    ours = KMeans.fit(blobs, 12, seed=0, n_init=3)
    theirs = sklearn_cluster.KMeans(12, n_init=3, random_state=0).fit(blobs)
    assert ours.inertia(blobs) <= theirs.inertia_ * 1.01
    assert ours.centroids.shape == (12, 8) and ours.centroids.dtype == torch.float32


def test_minibatch_inertia_matches_sklearn(blobs):
    """Mini-batch mode: within 3% of scikit-learn's MiniBatchKMeans with the same batch size."""
    ours = KMeans.fit(blobs, 12, seed=0, method="minibatch", batch_size=256, n_init=3)
    theirs = sklearn_cluster.MiniBatchKMeans(12, batch_size=256, n_init=3, random_state=0).fit(
        blobs
    )
    assert ours.inertia(blobs) <= theirs.inertia_ * 1.03


def test_predict_and_inertia_agree_with_sklearn(blobs):
    """With scikit-learn's centroids, our predict gives its labels and our inertia its score."""
    theirs = sklearn_cluster.KMeans(12, n_init=1, random_state=1).fit(blobs)
    model = KMeans(theirs.cluster_centers_)
    np.testing.assert_array_equal(model.predict(blobs).numpy(), theirs.predict(blobs))
    assert model.inertia(blobs) == pytest.approx(-theirs.score(blobs), rel=1e-5)


def test_chunking_does_not_change_results(blobs):
    """Tiny distance chunks give the same labels and distances as one chunk."""
    model = KMeans.fit(blobs, 12, seed=0)
    x = torch.from_numpy(blobs)
    labels, dists = assign(x, model.centroids, chunk_size=100)
    full_labels, full_dists = assign(x, model.centroids, chunk_size=10**6)
    assert torch.equal(labels, full_labels)
    torch.testing.assert_close(dists, full_dists)
    brute = torch.cdist(x.double(), model.centroids.double()).argmin(1)
    assert (labels == brute).float().mean() > 0.999  # float32 vs float64 ties only


def test_seeded(blobs):
    """Same seed, same centroids; another seed, other centroids."""
    a = KMeans.fit(blobs, 12, seed=3)
    b = KMeans.fit(blobs, 12, seed=3)
    c = KMeans.fit(blobs, 12, seed=4)
    assert torch.equal(a.centroids, b.centroids)
    assert not torch.equal(a.centroids, c.centroids)


def test_empty_cluster_is_relocated():
    """A centre no point is nearest to is moved onto the farthest point: no NaN, k distinct."""
    x = torch.tensor([[0.0, 0.0], [0.1, 0.0], [10.0, 0.0], [10.1, 0.0], [5.0, 5.0]])
    init = torch.tensor([[0.0, 0.0], [10.0, 0.0], [100.0, 100.0]])
    result = lloyd(x, init, max_iter=10)
    assert torch.isfinite(result.centroids).all()
    assert len({tuple(c.tolist()) for c in result.centroids}) == 3
    assert result.inertia == pytest.approx(0.01, abs=1e-5)
    dup = KMeans.fit(torch.tensor([[1.0, 1.0]] * 5 + [[2.0, 2.0]] * 5), 3, seed=0)
    assert torch.isfinite(dup.centroids).all()


def test_input_errors(blobs):
    """k out of range, NaN input and a dim mismatch are clear errors."""
    with pytest.raises(ValueError, match="k=5000"):
        KMeans.fit(blobs, 5000)
    bad = blobs.copy()
    bad[3, 2] = np.nan
    with pytest.raises(DataError, match="NaN"):
        KMeans.fit(bad, 4)
    with pytest.raises(DataError, match="dim 3"):
        KMeans(np.zeros((4, 8), np.float32)).predict(np.zeros((2, 3), np.float32))


def test_save_load_round_trip(blobs, tmp_path):
    """safetensors with metadata: same centroids and predictions after loading."""
    model = KMeans.fit(blobs, 12, seed=0)
    model.save(tmp_path / "km.safetensors", metadata={"layer": "6"})
    again = KMeans.load(tmp_path / "km.safetensors")
    assert torch.equal(again.centroids, model.centroids)
    assert again.metadata["layer"] == "6" and again.metadata["k"] == "12"
    assert torch.equal(again.predict(blobs), model.predict(blobs))


@pytest.mark.parametrize("compress", [0, 3, ("gzip", 3), ("xz", 3)])
def test_load_fairseq_style_joblib(blobs, tmp_path, compress):
    """fairseq's km files (joblib dumps of MiniBatchKMeans) load without running their code."""
    joblib = pytest.importorskip("joblib")
    theirs = sklearn_cluster.MiniBatchKMeans(
        7, batch_size=500, n_init=2, random_state=0, reassignment_ratio=0.0
    ).fit(blobs)
    joblib.dump(theirs, tmp_path / "km.bin", compress=compress)
    model = KMeans.load(tmp_path / "km.bin")
    np.testing.assert_array_equal(model.centroids.numpy(), theirs.cluster_centers_)
    np.testing.assert_array_equal(model.predict(blobs).numpy(), theirs.predict(blobs))
    assert model.metadata["sklearn_class"].endswith("MiniBatchKMeans")
    trusted = KMeans.load(tmp_path / "km.bin", trust=True)
    assert torch.equal(trusted.centroids, model.centroids)


def test_plain_pickle_and_refusal(blobs, tmp_path):
    """A pickled KMeans loads; a pickle that would call a function is refused, not run."""
    theirs = sklearn_cluster.KMeans(5, n_init=1, random_state=0).fit(blobs)
    (tmp_path / "km.pkl").write_bytes(pickle.dumps(theirs))
    np.testing.assert_array_equal(
        KMeans.load(tmp_path / "km.pkl").centroids.numpy(), theirs.cluster_centers_
    )
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (marker.write_text, ("code ran",))

    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(UnsafePickleError, match="not on the allow-list"):
        KMeans.load(tmp_path / "evil.pkl")
    assert not marker.exists()
    (tmp_path / "junk.bin").write_bytes(b"not a model at all")
    with pytest.raises(DataError):
        KMeans.load(tmp_path / "junk.bin")


def test_fit_store_uses_a_fraction_of_files(blobs):
    """fit_store clusters the frames of round(fraction x files) utterances, seeded."""
    store = {f"u{i}": blobs[i * 100 : (i + 1) * 100] for i in range(30)}
    model = fit_store(store, 5, fraction=0.2, seed=1)
    assert model.metadata["num_points"] == str(6 * 100)
    again = fit_store(store, 5, fraction=0.2, seed=1)
    assert torch.equal(model.centroids, again.centroids)
    capped = fit_store(store, 5, fraction=1.0, max_frames=250)
    assert capped.metadata["num_points"] == "250"


def _safetensors(path, header: dict, data: bytes) -> None:
    """A safetensors file with exactly this header (which may lie) and these bytes."""
    import json
    import struct

    encoded = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + data)


@pytest.fixture
def tiny_store(tmp_path):
    """A one-shard store of 3 utterances of 4-dim frames."""
    from sslspeech.features import StoreWriter
    from sslspeech.features.store import write_store_meta

    write_store_meta(tmp_path / "store", {"num_shards": 1})
    with StoreWriter(tmp_path / "store") as writer:
        for i in range(3):
            writer.add(f"u{i}", np.ones((5, 4), np.float32) * i)
    return tmp_path / "store"


def test_broken_models_are_refused_by_transcribe(tmp_path, tiny_store, capsys):
    """A NaN centroid, k=0 and a header without dtype: `transcribe` exits 1 naming the file
    and the problem (a NaN centroid used to give every frame unit 0 with exit 0)."""
    from sslspeech.cli import main

    centroids = np.arange(8, dtype=np.float32).reshape(2, 4)
    nan = centroids.copy()
    nan[1, 2] = np.nan
    KMeans(nan).save(tmp_path / "nan.safetensors")
    KMeans(np.zeros((0, 4), np.float32)).save(tmp_path / "empty.safetensors")
    entry = {"shape": [2, 4], "data_offsets": [0, 32]}
    _safetensors(tmp_path / "nodtype.safetensors", {"centroids": entry}, centroids.tobytes())
    cases = {
        "nan": "centroids \\[1\\] hold NaN",
        "empty": "no centroid",
        "nodtype": "exactly dtype, shape and data_offsets",
    }
    for name, message in cases.items():
        path = tmp_path / f"{name}.safetensors"
        with pytest.raises(DataError, match=message):
            KMeans.load(path)
        assert main(["transcribe", str(tiny_store), str(path), str(tmp_path / "u.jsonl")]) == 1
        assert f"{path}:" in capsys.readouterr().err
        assert not (tmp_path / "u.jsonl").exists()


def test_non_finite_sklearn_centroids_are_refused(blobs, tmp_path):
    """The same check holds for imported scikit-learn models."""
    theirs = sklearn_cluster.KMeans(3, n_init=1, random_state=0).fit(blobs)
    theirs.cluster_centers_[0, 0] = np.inf
    (tmp_path / "km.pkl").write_bytes(pickle.dumps(theirs))
    with pytest.raises(DataError, match="NaN or infinite"):
        KMeans.load(tmp_path / "km.pkl")
