"""minimal_hubert's parity-test style against transformers' HubertModel: hypothesis-generated
waveforms (batch 1-4, 1,000-16,000 samples, amplitude +-10), `ours.load_state_dict(hf.state_dict())`
on a tiny random config, every hidden state equal within torch's default float32 tolerances on
the autograd path (eval mode, gradients on); with an HF attention_mask too."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from sslspeech.models.configs import HuBERTConfig
from sslspeech.models.hubert import HuBERT

transformers = pytest.importorskip("transformers")

CONV = [(16, 10, 5)] + [(16, 3, 2)] * 4 + [(16, 2, 2)] * 2
SHAPE = {"embed_dim": 32, "ffn_dim": 64, "num_layers": 2, "num_heads": 2, "pos_conv_kernel": 16,
         "pos_conv_groups": 4}  # fmt: skip


@st.composite
def waveforms(draw: st.DrawFn) -> torch.Tensor:
    """(batch 1-4, 1,000-16,000 samples) float32 in [-10, 10] (minimal_hubert's strategy)."""
    batch = draw(st.integers(min_value=1, max_value=4))
    length = draw(st.integers(min_value=1_000, max_value=16_000))
    elements = st.floats(-10, 10, allow_nan=False, allow_infinity=False, allow_subnormal=False,
                         width=32)  # fmt: skip
    return torch.from_numpy(draw(arrays(np.float32, (batch, length), elements=elements)))


@pytest.fixture(scope="module")
def models() -> tuple[object, HuBERT]:
    """A random tiny transformers HubertModel and our HuBERT loaded from its state dict."""
    torch.manual_seed(0)
    hf_config = transformers.HubertConfig(
        hidden_size=SHAPE["embed_dim"],
        intermediate_size=SHAPE["ffn_dim"],
        num_hidden_layers=SHAPE["num_layers"],
        num_attention_heads=SHAPE["num_heads"],
        num_conv_pos_embeddings=SHAPE["pos_conv_kernel"],
        num_conv_pos_embedding_groups=SHAPE["pos_conv_groups"],
        conv_dim=[c for c, _, _ in CONV],
        conv_kernel=[k for _, k, _ in CONV],
        conv_stride=[s for _, _, s in CONV],
    )
    hf = transformers.HubertModel(hf_config).eval()
    ours = HuBERT(HuBERTConfig(extractor_conv_layers=tuple(CONV), **SHAPE)).eval()
    ours.load_state_dict(hf.state_dict())
    return hf, ours


@given(waveforms=waveforms(), cut=st.floats(0.1, 1.0))
@settings(max_examples=6, deadline=None)
def test_hidden_states_equal_transformers(models, waveforms: torch.Tensor, cut: float) -> None:
    """last_hidden_state and hidden_states[1:] = our forward and layer outputs; the same with
    an attention_mask that pads the last row after a fraction `cut` of it (>= 400 samples)."""
    hf, ours = models
    expected = hf(waveforms, output_hidden_states=True)
    torch.testing.assert_close(ours(waveforms), expected.last_hidden_state)
    layers = ours.get_intermediate_outputs(waveforms, before_residual=False)
    for theirs, mine in zip(expected.hidden_states[1:], layers, strict=True):
        torch.testing.assert_close(mine, theirs)
    mask = torch.ones(waveforms.shape, dtype=torch.long)
    mask[-1, max(400, int(cut * waveforms.shape[1])) :] = 0
    expected = hf(waveforms, attention_mask=mask, output_hidden_states=True)
    layers = ours.get_intermediate_outputs(waveforms, attention_mask=mask, before_residual=False)
    for theirs, mine in zip(expected.hidden_states[1:], layers, strict=True):
        torch.testing.assert_close(mine, theirs)
