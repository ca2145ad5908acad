"""SpidR / DinoSR student encoders as transformers `Data2VecAudioModel` directories.

DinoSR (and SpidR after it) took data2vec's encoder: post-LN layers, a layer-norm conv
extractor and a positional embedding of `depth` grouped convs, each conv -> drop the last frame
if the kernel is even -> non-affine LayerNorm -> GELU. transformers ships exactly that as
`Data2VecAudioModel` (`num_conv_pos_embeddings` = depth, `conv_pos_kernel_size` = the per-conv
kernel max(3, K // depth)); HubertModel and Wav2Vec2Model have a single positional conv.

Equal outputs for unpadded batches. Padded rows differ: transformers zeroes the padding frames
once before the positional convs, SpidR/DinoSR zero them before each conv and leave the encoder
input's padding as computed. transformers' norms of the conv extractor and positional convs
have eps 1e-5, so only checkpoints with `layer_norm_eps` 1e-5 export.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from sslspeech.errors import CheckpointError
from sslspeech.interop.hf import hf_config, hf_state, write_hf_directory

#: Fields of transformers' HubertConfig that Data2VecAudioConfig does not have.
_HUBERT_ONLY = ("feat_extract_norm", "do_stable_layer_norm", "conv_pos_batch_norm",
                "feat_proj_layer_norm")  # fmt: skip
_POS_CONV = re.compile(r"encoder\.pos_conv_embed\.convs\.(\d+)\.")
HF_NORM_EPS = 1e-5


def _check_exportable(config: Any) -> None:
    problems = {
        "extractor_mode must be 'layer_norm'": config.extractor_mode != "layer_norm",
        "layer_norm_first must be false (data2vec layers are post-LN)": config.layer_norm_first,
        f"layer_norm_eps must be {HF_NORM_EPS}": config.layer_norm_eps != HF_NORM_EPS,
    }
    bad = [text for text, failed in problems.items() if failed]
    if bad:
        raise CheckpointError(
            f"this {config.__class__.__name__} has no exact transformers Data2VecAudioModel "
            f"equivalent: {'; '.join(bad)}"
        )


def data2vec_config(config: Any) -> dict[str, Any]:
    """A transformers Data2VecAudioConfig dict for a SpidR/DinoSR config (the student)."""
    out = {key: value for key, value in hf_config(config).items() if key not in _HUBERT_ONLY}
    out.update(
        architectures=["Data2VecAudioModel"],
        model_type="data2vec-audio",
        num_conv_pos_embeddings=config.pos_conv_depth,
        conv_pos_kernel_size=max(3, config.pos_conv_kernel // config.pos_conv_depth),
    )
    return out


def export_data2vec(model: Any, directory: str | os.PathLike[str]) -> Path:
    """Write the student encoder of a SpidR/DinoSR model as a Data2VecAudioModel directory
    (teacher, heads and codebooks are not part of it)."""
    config = model.config
    _check_exportable(config)
    state = {
        key: value.detach().float().cpu()
        for key, value in model.state_dict().items()
        if key.startswith("encoder.")
    }
    weights = {
        _POS_CONV.sub(r"encoder.pos_conv_embed.layers.\1.conv.", key): value
        for key, value in hf_state(config, state).items()
    }
    return write_hf_directory(directory, weights, data2vec_config(config), config)
