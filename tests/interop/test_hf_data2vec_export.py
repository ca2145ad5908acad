"""SpidR/DinoSR students exported with `sslspeech convert SRC OUT --to hf` load in transformers
as Data2VecAudioModel (no missing or unexpected weights) and give our outputs within 1e-4."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sslspeech.cli import main
from sslspeech.errors import CheckpointError
from sslspeech.interop.hf_data2vec import export_data2vec
from sslspeech.models import load_model

transformers = pytest.importorskip("transformers")


@pytest.mark.parametrize("name", ["tiny_spidr", "tiny_dinosr"])
def test_convert_to_hf_matches(fixtures_dir: Path, tmp_path: Path, capsys, name: str) -> None:
    """last_hidden_state = our student's output, hidden_states[i] = layer i's full output."""
    src = fixtures_dir / "spidr" / name
    assert main(["convert", str(src), str(tmp_path / "hf"), "--to", "hf"]) == 0
    assert json.loads(capsys.readouterr().out)["model_type"] == name.removeprefix("tiny_")
    hf, info = transformers.Data2VecAudioModel.from_pretrained(
        tmp_path / "hf", output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    ours = load_model(src)
    torch.manual_seed(0)
    waveforms = torch.randn(2, 12000)
    with torch.no_grad():
        expected = hf.eval()(waveforms, output_hidden_states=True)
        out = ours.encoder(waveforms)
    torch.testing.assert_close(out.output, expected.last_hidden_state, atol=1e-4, rtol=1e-4)
    for mine, theirs in zip(out.layer_outputs, expected.hidden_states[1:], strict=True):
        torch.testing.assert_close(mine, theirs, atol=1e-4, rtol=1e-4)
    assert ours.config.pos_conv_depth == hf.config.num_conv_pos_embeddings > 1


def test_refuses_what_transformers_cannot_express(fixtures_dir: Path, tmp_path: Path) -> None:
    """A pre-LN or group-norm student or another LayerNorm eps has no exact Data2VecAudio
    equivalent: refused, naming each reason."""
    model = load_model(fixtures_dir / "spidr" / "tiny_spidr")
    model.config = model.config.replace(layer_norm_first=True, layer_norm_eps=1e-6)
    with pytest.raises(CheckpointError, match=r"layer_norm_first must be false.*1e-05"):
        export_data2vec(model, tmp_path / "hf")
