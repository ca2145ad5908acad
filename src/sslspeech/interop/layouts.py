"""Foreign state-dict layouts for `model.load_state_dict(...)`: told apart by their key names
and converted to native names by the format readers' own converters.

Layouts: HF transformers HubertModel (`hubert.` prefix of task models too), torchaudio
Wav2Vec2Model / HuBERTPretrainModel, fairseq HubertModel (s3prl's `model_weight` uses the same
names) and the `spidr` package's SpidR/DinoSR. A key that does not fit the detected layout is an
error naming it; a state dict of no known layout is left to `load_state_dict`'s own strict check.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from torch import Tensor

Converter = Callable[[dict[str, Tensor], str], dict[str, Tensor]]

#: Pretraining heads, dropped when a pretraining state dict is loaded into an encoder.
HEAD_KEYS = ("mask_embedding", "label_embeddings", "final_proj.weight", "final_proj.bias")


def _converter(name: str) -> Converter:
    if name == "hf":
        from sslspeech.interop.hf import state_from_hf

        return state_from_hf
    if name == "torchaudio":
        from sslspeech.interop.torchaudio import native_state as from_torchaudio

        return from_torchaudio
    if name == "fairseq":
        from sslspeech.interop.fairseq import native_state as from_fairseq

        return from_fairseq
    from sslspeech.interop.spidr import native_state_from_spidr

    return native_state_from_spidr


def detect_layout(keys: Collection[str]) -> str | None:
    """ "hf", "torchaudio", "fairseq" (and s3prl), "spidr", or None, from the key names."""
    keys = {key.removeprefix("module.") for key in keys}
    conv0 = "feature_extractor.conv_layers.0.conv.weight"
    if "encoder.pos_conv.0.bias" in keys:
        return "fairseq"
    if "codebooks.0.codebook" in keys and any(key.startswith("student.") for key in keys):
        return "spidr"
    if conv0 in keys or f"wav2vec2.{conv0}" in keys:
        transformer = any(
            key.startswith(("encoder.transformer.", "wav2vec2.encoder.")) for key in keys
        )
        return "torchaudio" if transformer else "hf"
    if f"hubert.{conv0}" in keys:
        return "hf"
    return None


def to_native(state: dict[str, Tensor], model_type: str) -> dict[str, Tensor] | None:
    """`state` with native names for a `model_type` model, or None when no layout fits.

    Loaded into an encoder ("hubert"), a pretraining state dict loses its heads (as
    `HuBERT.from_pretrained` does).
    """
    layout = detect_layout(state)
    if layout is None:
        return None
    state = {key.removeprefix("module."): value for key, value in state.items()}
    native = _converter(layout)(state, f"{layout} state dict")
    if model_type == "hubert":
        native = {key: value for key, value in native.items() if key not in HEAD_KEYS}
    return native
