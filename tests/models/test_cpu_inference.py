"""The CPU inference seam (`optimize_for_cpu_inference`): its fast paths equal the plain modules
and transformers' HubertModel (hypothesis waveforms, DC offsets and constants included), a
oneDNN GEMM that raises or computes wrong is probed out, and only CPU float32 inference takes
the fast paths (feature extraction and ABX layers do; autograd, autocast and compile do not)."""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sslspeech.models import cpu_inference
from sslspeech.models.cpu_inference import (
    ChannelsLastPositionalEmbedding,
    FusedFeedForward,
    OneDNNLinear,
    TiledConvFeatureExtractor,
    onednn_gemm_works,
    optimize_for_cpu_inference,
)
from sslspeech.models.hubert import HuBERT
from tests.models.test_encoder import tiny

FAST_CLASSES = (OneDNNLinear, FusedFeedForward, TiledConvFeatureExtractor)


def count_gemm_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, ...]]:
    """Records the input shape of every call of oneDNN's GEMM op from now on."""
    real = torch.ops.mkldnn._linear_pointwise
    calls: list[tuple[int, ...]] = []

    def counting(x: torch.Tensor, *args: object) -> torch.Tensor:
        calls.append(tuple(x.shape))
        return real(x, *args)

    monkeypatch.setattr(torch.ops.mkldnn, "_linear_pointwise", counting)
    return calls


@pytest.fixture(autouse=True)
def fresh_probe() -> Iterator[None]:
    """Each test probes oneDNN's GEMM anew (the probe is cached per process)."""
    onednn_gemm_works.cache_clear()
    yield
    onednn_gemm_works.cache_clear()


# The oneDNN fast path exists only where the build has the op (every Linux x86 wheel, CI
# included); elsewhere the probe keeps the plain path, which the probe tests cover.
needs_onednn = pytest.mark.skipif(
    not onednn_gemm_works(), reason="this torch build has no working oneDNN GEMM"
)


def perturbed(model: HuBERT) -> HuBERT:
    """`model` with every parameter moved off its init (non-trivial norms and biases)."""
    torch.manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    return model


@needs_onednn
@pytest.mark.parametrize(
    "overrides",
    [{}, {"extractor_conv_bias": True}, {"extractor_mode": "layer_norm", "layer_norm_first": True}],
)
def test_fast_paths_equal_the_plain_modules(
    monkeypatch: pytest.MonkeyPatch, overrides: dict[str, object]
) -> None:
    """On a padded batch over several time tiles (and a partial last one) the optimized model
    gives the plain model's layer outputs, calls oneDNN's GEMM, and keeps its state dict."""
    torch.manual_seed(0)
    plain = perturbed(HuBERT(tiny(**overrides)).eval())
    fast = optimize_for_cpu_inference(copy.deepcopy(plain))
    fast.encoder.feature_extractor.tile_samples = 1000  # 8 frames of 3 rows per tile
    assert {type(m) for m in fast.modules()} >= {*FAST_CLASSES, ChannelsLastPositionalEmbedding}
    assert fast.state_dict().keys() == plain.state_dict().keys()
    waveforms = torch.randn(3, 4000) * torch.tensor([[1.0], [0.01], [5.0]]) + 0.3
    lengths = torch.tensor([4000, 2500, 3100])
    calls = count_gemm_calls(monkeypatch)
    with torch.inference_mode():
        expected = plain.get_intermediate_outputs(waveforms, lengths, before_residual=False)
        assert not calls
        got = fast.get_intermediate_outputs(waveforms, lengths, before_residual=False)
    assert len(calls) == 1 + 4 * plain.num_layers  # projection; qkv, proj, 2 feed-forward
    for expected_layer, layer in zip(expected, got, strict=True):
        torch.testing.assert_close(layer, expected_layer)


@pytest.fixture(scope="module")
def hf_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[HuBERT, torch.nn.Module]:
    """A tiny HuBERT at its init, optimized, and transformers' HubertModel with its weights."""
    transformers = pytest.importorskip("transformers")
    from sslspeech.interop.hf import export_hf

    torch.manual_seed(0)
    ours = HuBERT(tiny()).eval()
    directory = tmp_path_factory.mktemp("hf")
    export_hf(ours, directory)
    theirs = transformers.HubertModel.from_pretrained(directory).eval()
    optimize_for_cpu_inference(ours).encoder.feature_extractor.tile_samples = 4000
    return ours, theirs


row = st.tuples(
    st.floats(-10, 10),  # DC offset
    st.one_of(st.just(0.0), st.floats(-10, 10)),  # noise amplitude (0: a constant row)
    st.integers(0, 2**31 - 1),  # noise seed
)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(row, min_size=1, max_size=4), num_samples=st.integers(1000, 16000))
def test_fast_paths_match_transformers(
    hf_pair: tuple[HuBERT, torch.nn.Module],
    rows: list[tuple[float, float, int]],
    num_samples: int,
) -> None:
    """minimal_hubert's parity check on the fast paths: batches of 1-4 rows of 1,000-16,000
    samples, each offset + amplitude * noise (both within +-10, constant rows included), give
    transformers' last hidden state within torch's default float32 tolerances."""
    ours, theirs = hf_pair
    waveforms = torch.stack(
        [
            offset
            + amplitude * torch.randn(num_samples, generator=torch.Generator().manual_seed(s))
            for offset, amplitude, s in rows
        ]
    )
    with torch.inference_mode():
        torch.testing.assert_close(ours(waveforms), theirs(waveforms).last_hidden_state)


@pytest.mark.parametrize("failure", ["raises", "wrong"])
def test_a_failing_gemm_is_probed_out(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, failure: str
) -> None:
    """A GEMM op that raises (a changed signature) or computes wrong is found by the probe:
    logged once, the linears stay plain, inference runs and equals the plain model."""
    real = torch.ops.mkldnn._linear_pointwise

    def broken(*args: object) -> torch.Tensor:
        if failure == "raises":
            raise RuntimeError("_linear_pointwise() takes 5 arguments")
        return real(*args) + 1e-3

    monkeypatch.setattr(torch.ops.mkldnn, "_linear_pointwise", broken)
    torch.manual_seed(0)
    plain = HuBERT(tiny()).eval()
    with caplog.at_level(logging.WARNING, logger=cpu_inference.__name__):
        fast = optimize_for_cpu_inference(copy.deepcopy(plain))
        optimize_for_cpu_inference(copy.deepcopy(plain))
    assert len(caplog.records) == 1 and "F.linear" in caplog.records[0].getMessage()
    assert not {OneDNNLinear, FusedFeedForward} & {type(m) for m in fast.modules()}
    assert isinstance(fast.encoder.feature_extractor, TiledConvFeatureExtractor)
    waveforms = torch.randn(2, 3000)
    with torch.inference_mode():
        torch.testing.assert_close(fast(waveforms), plain(waveforms))


@needs_onednn
def test_only_cpu_float32_inference_takes_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """An optimized model runs its plain modules with autograd on (and trains), under CPU
    autocast and while being compiled; an unoptimized one never calls the GEMM."""
    torch.manual_seed(0)
    plain = HuBERT(tiny()).eval()
    fast = optimize_for_cpu_inference(copy.deepcopy(plain))
    waveforms = torch.randn(2, 3000)
    calls = count_gemm_calls(monkeypatch)
    fast(waveforms).sum().backward()
    assert all(p.grad is not None for p in fast.parameters() if p.requires_grad)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert fast(waveforms).dtype == torch.bfloat16
    with torch.inference_mode():
        plain(waveforms)
        monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
        fast(waveforms)
        assert not calls
        monkeypatch.undo()
        calls = count_gemm_calls(monkeypatch)
        fast(waveforms)
    assert calls


@needs_onednn
def test_feature_extraction_and_abx_layers_take_the_fast_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The features Featurizer and ABX's layer features run a loaded checkpoint on the fast
    paths, with the plain model's features."""
    from sslspeech.data.audio import load_audio, write_wav
    from sslspeech.evaluation.layers import layer_features
    from sslspeech.features.extract import FeatureSpec, Featurizer

    torch.manual_seed(0)
    plain = HuBERT(tiny()).eval()
    plain.save_pretrained(tmp_path / "ckpt")
    write_wav(tmp_path / "u0.wav", np.random.default_rng(0).uniform(-0.5, 0.5, 3000))
    wav = load_audio(tmp_path / "u0.wav")
    with torch.inference_mode():
        expected = plain.get_intermediate_outputs(torch.from_numpy(wav)[None])[1][0].numpy()
    calls = count_gemm_calls(monkeypatch)
    featurizer = Featurizer(FeatureSpec(kind="model", checkpoint=str(tmp_path / "ckpt"), layer=2))
    assert isinstance(featurizer.model.encoder.feature_extractor, TiledConvFeatureExtractor)
    calls.clear()  # the probe's calls
    np.testing.assert_allclose(featurizer(wav), expected, atol=1e-5, rtol=1e-5)
    assert calls
    calls.clear()
    features = layer_features(copy.deepcopy(plain), {"u0": tmp_path / "u0.wav"}, [2])
    np.testing.assert_allclose(features[2]["u0"], expected, atol=1e-5, rtol=1e-5)
    assert calls
