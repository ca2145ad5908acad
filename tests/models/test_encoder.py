"""The encoder parts: config validation and presets, frame-validity rules, SpidR's multi-conv
positional embedding (against the spidr fixtures), padded-vs-single consistency, too-short
input errors, layer drop and bf16 on CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sslspeech.errors import ConfigError, DataError, SSLSpeechError
from sslspeech.models.configs import HuBERTConfig, base, large, xlarge
from sslspeech.models.encoder import (
    Encoder,
    conv_output_lengths,
    fairseq_frame_lengths,
    padding_mask,
)
from sslspeech.models.hubert import HuBERT
from sslspeech.utils.safetensors import load_file

TOL = {"atol": 5e-5, "rtol": 1e-4}
TINY_CONV = ((16, 10, 5), (16, 3, 2), (16, 3, 2), (16, 2, 2))


def tiny(**overrides) -> HuBERTConfig:
    values = {
        "extractor_conv_layers": TINY_CONV,
        "embed_dim": 24,
        "ffn_dim": 48,
        "num_layers": 3,
        "num_heads": 3,
        "pos_conv_kernel": 8,
        "pos_conv_groups": 4,
    }
    return HuBERTConfig(**{**values, **overrides})


def test_config_errors_name_the_field() -> None:
    """Bad values raise ConfigError (an SSLSpeechError) naming the field and the fix."""
    with pytest.raises(ConfigError, match="extractor_mode"):
        tiny(extractor_mode="batch")
    with pytest.raises(ConfigError, match="divisible by num_heads"):
        tiny(num_heads=5)
    with pytest.raises(ConfigError, match="unknown field"):
        HuBERTConfig.from_dict({"embed_dimension": 3})
    with pytest.raises(ConfigError, match="feature_projection"):
        tiny(feature_projection=False)
    with pytest.raises(ConfigError, match="true or false"):
        tiny(layer_norm_first="yes")
    with pytest.raises(SSLSpeechError, match="num_layers"):
        HuBERT(tiny()).get_intermediate_outputs(torch.randn(1, 800), num_layers=4)


def test_config_dict_round_trip() -> None:
    """to_dict -> JSON -> from_dict gives an equal config (conv layers back to tuples)."""
    config = tiny(layer_norm_first=True, frame_rule="fairseq")
    again = HuBERTConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    assert config.replace(num_layers=1).num_layers == 1


def test_presets_match_transformers_sizes() -> None:
    """base/large/xlarge have the parameter counts of transformers' HubertModel for the same
    sizes (minus its masked_spec_embed and the weight-norm g vector)."""
    transformers = pytest.importorskip("transformers")
    for ours, hf_kwargs in (
        (base(), {}),
        (
            large(),
            {
                "hidden_size": 1024,
                "num_hidden_layers": 24,
                "num_attention_heads": 16,
                "intermediate_size": 4096,
                "feat_extract_norm": "layer",
                "do_stable_layer_norm": True,
            },
        ),
    ):
        with torch.device("meta"):
            hf = transformers.HubertModel(transformers.HubertConfig(**hf_kwargs))
            mine = HuBERT(ours)
        hf_count = sum(p.numel() for p in hf.parameters()) - ours.embed_dim - ours.pos_conv_kernel
        assert sum(p.numel() for p in mine.parameters()) == hf_count
    assert (xlarge().embed_dim, xlarge().num_layers, xlarge().num_heads) == (1280, 48, 16)
    assert base().samples_per_frame == 320 and base().receptive_field == 400


def test_fairseq_frame_rule_matches_its_definition() -> None:
    """fairseq_frame_lengths equals the literal rule: drop N % T samples, view (T, N // T), a
    frame is padding only if all its samples are; and it differs from the conv formula."""
    config = base()
    num_samples = 10000
    num_frames = int(conv_output_lengths(torch.tensor([num_samples]), config)[0])
    lengths = torch.arange(400, num_samples + 1, 37)
    samples_pad = torch.arange(num_samples)[None, :] >= lengths[:, None]
    extra = num_samples % num_frames
    literal = samples_pad[:, : num_samples - extra].view(len(lengths), num_frames, -1).all(-1)
    ours = fairseq_frame_lengths(lengths, num_samples, num_frames)
    assert torch.equal(padding_mask(ours, num_frames), literal)
    assert bool((ours > conv_output_lengths(lengths, config)).any())


def spidr_encoder(folder: Path) -> tuple[Encoder, dict]:
    """Our Encoder with the student weights of a spidr native checkpoint."""
    raw = json.loads((folder / "config.json").read_text())
    config = HuBERTConfig(
        extractor_mode=raw["extractor_mode"],
        extractor_conv_layers=tuple(map(tuple, raw["extractor_conv_layer_config"])),
        extractor_conv_bias=raw["extractor_conv_bias"],
        embed_dim=raw["encoder_embed_dim"],
        ffn_dim=raw["encoder_ff_interm_features"],
        num_layers=raw["encoder_num_layers"],
        num_heads=raw["encoder_num_heads"],
        layer_norm_first=raw["encoder_layer_norm_first"],
        qkv_bias=raw["encoder_qkv_bias"],
        pos_conv_kernel=raw["encoder_pos_conv_kernel"],
        pos_conv_groups=raw["encoder_pos_conv_groups"],
        pos_conv_depth=raw["encoder_pos_conv_depth"],
    )
    state = torch.load(folder / "checkpoint.pt", weights_only=True)["model"]
    native = {}
    for key, value in state.items():
        if key.startswith(("feature_extractor.", "feature_projection.")):
            native[key] = value
        elif key.startswith("student."):
            native["transformer." + key[len("student.") :]] = value
    encoder = Encoder(config).eval()
    encoder.load_state_dict(native, strict=True)
    return encoder, config


@pytest.mark.parametrize("folder", ["tiny_spidr", "tiny_dinosr"])
def test_multi_conv_positional_embedding_matches_spidr(fixtures_dir: Path, folder: str) -> None:
    """The spidr student (kernel 15 depth 5 -> 3-tap convs; kernel 20 depth 5 -> 4-tap convs,
    last frame dropped; no qkv bias) is reproduced by our Encoder, padded batch included."""
    root = fixtures_dir / "spidr" / folder
    encoder, config = spidr_encoder(root)
    layer_kernel = encoder.transformer.pos_conv_embed.layer_kernel
    assert layer_kernel == max(3, config.pos_conv_kernel // config.pos_conv_depth)
    inputs, expected = (
        load_file(root / "inputs.safetensors"),
        load_file(root / "expected.safetensors"),
    )
    with torch.no_grad():
        out = encoder(inputs["waveforms"])
        padded = encoder(inputs["padded_waveforms"], inputs["lengths"])
    torch.testing.assert_close(out.conv_features, expected["extract_features"], **TOL)
    torch.testing.assert_close(out.output, expected["final"], **TOL)
    for i in range(1, config.num_layers + 1):
        torch.testing.assert_close(out.ffn_outputs[i - 1], expected[f"layer_{i}"], **TOL)
        torch.testing.assert_close(
            out.layer_outputs[i - 1], expected[f"layer_{i}_after_residual"], **TOL
        )
    assert torch.equal(padded.frame_lengths, expected["padded_frame_lengths"])
    for b, n in enumerate(padded.frame_lengths.tolist()):
        torch.testing.assert_close(padded.output[b, :n], expected["padded_final"][b, :n], **TOL)
        for i in range(1, config.num_layers + 1):
            torch.testing.assert_close(
                padded.ffn_outputs[i - 1][b, :n], expected[f"padded_layer_{i}"][b, :n], **TOL
            )


@pytest.mark.parametrize(
    "overrides",
    [
        {"extractor_mode": "layer_norm"},
        {"extractor_mode": "layer_norm", "layer_norm_first": True},
        {"extractor_mode": "layer_norm", "pos_conv_kernel": 9, "pos_conv_depth": 3},
    ],
)
def test_padded_row_equals_single_utterance(overrides: dict) -> None:
    """With a layer-norm extractor (no statistics over time), a padded row's valid frames equal
    the utterance run alone. (Group-norm extractors see the padding, as in every reference;
    fairseq's rule counts a frame that straddles the padding as valid, so it differs too.)"""
    torch.manual_seed(0)
    model = HuBERT(tiny(**overrides)).eval()
    long, short = torch.randn(1, 3000), torch.randn(1, 1900)
    batch = torch.cat([long, torch.nn.functional.pad(short, (0, 1100))])
    lengths = torch.tensor([3000, 1900])
    with torch.no_grad():
        padded = model(batch, lengths)
        alone = model(short)
        layers = model.get_intermediate_outputs(batch, lengths, before_residual=False)
        alone_layers = model.get_intermediate_outputs(short, before_residual=False)
        full = model(long)
    n = alone.shape[1]
    assert int(model.frame_lengths(lengths, num_samples=3000)[1]) >= n
    torch.testing.assert_close(padded[1, :n], alone[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(layers[-1][1, :n], alone_layers[-1][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(padded[0], full[0], atol=1e-5, rtol=1e-5)


def test_too_short_and_bad_input_raise_clear_errors() -> None:
    """Empty or too-short waveforms, rows shorter than one frame, wrong shapes: DataError."""
    model = HuBERT(tiny()).eval()
    field = model.config.receptive_field
    with pytest.raises(DataError, match="at least"):
        model(torch.zeros(1, 0))
    with pytest.raises(DataError, match="at least"):
        model(torch.zeros(2, field - 1))
    with pytest.raises(DataError, match="too short"):
        model(torch.zeros(2, 2000), torch.tensor([2000, 0]))
    with pytest.raises(DataError, match=r"\(batch, time\)"):
        model(torch.zeros(2000))
    with pytest.raises(DataError, match="exceed"):
        model(torch.zeros(1, 2000), torch.tensor([2001]))
    with torch.no_grad():
        assert model(torch.zeros(1, field)).shape == (1, 1, 24)


def test_layer_drop_keeps_one_output_per_layer() -> None:
    """In training with layer drop, every layer still reports an output (SpidR's convention)."""
    torch.manual_seed(0)
    model = HuBERT(tiny(layer_drop=0.9)).train()
    outputs = model.get_intermediate_outputs(torch.randn(2, 2000))
    assert len(outputs) == 3
    assert all(o.shape == (2, outputs[0].shape[1], 24) for o in outputs)


def test_num_layers_stops_early_without_final_norm() -> None:
    """num_layers=k returns k outputs equal to the first k of a full run (pre-LN: the last
    layer's output is not the normed encoder output)."""
    torch.manual_seed(0)
    model = HuBERT(tiny(layer_norm_first=True)).eval()
    waveforms = torch.randn(1, 2000)
    with torch.no_grad():
        every = model.get_intermediate_outputs(waveforms, before_residual=False)
        two = model.get_intermediate_outputs(waveforms, num_layers=2, before_residual=False)
        final = model(waveforms)
    assert len(two) == 2 and torch.equal(two[1], every[1])
    assert not torch.allclose(every[-1], final)
    torch.testing.assert_close(model.encoder.transformer.layer_norm(every[-1]), final)


def test_bfloat16_cpu_smoke() -> None:
    """The model runs in bfloat16 on CPU, with lengths, and stays near float32."""
    torch.manual_seed(0)
    model = HuBERT(tiny(extractor_mode="layer_norm", layer_norm_first=True)).eval()
    waveforms, lengths = torch.randn(2, 2400), torch.tensor([2400, 1700])
    with torch.no_grad():
        reference = model(waveforms, lengths)
        half = model.to(torch.bfloat16)(waveforms.bfloat16(), lengths)
    assert half.dtype == torch.bfloat16 and torch.isfinite(half).all()
    assert (half.float() - reference).abs().max() < 0.25
