"""Drop-in behaviour for code written for minimal_hubert or spidr: `load_state_dict` of foreign
state dicts (a load-state-dict pre-hook) and HF-style `attention_mask` arguments."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from sslspeech.errors import DataError


def native_state_dict_pre_hook(
    module: nn.Module, state_dict: dict[str, Any], prefix: str, *_: Any
) -> None:
    """Load-state-dict pre-hook: a fairseq / s3prl / torchaudio / HF / spidr state dict under
    `prefix` is rewritten in place with native names (see `sslspeech.interop.layouts`); native
    state dicts, and those of no known layout (left to the strict key check), are untouched."""
    keys = [key for key in state_dict if key.startswith(prefix)]
    local = {key[len(prefix) :]: state_dict[key] for key in keys}
    if set(local) <= set(module.state_dict()):
        return
    # models -> interop is the known import circle (interop builds models): kept to this one
    # lazy import, as in `Pretrained.from_pretrained`.
    from sslspeech.interop.layouts import to_native

    native = to_native(local, str(getattr(module, "model_type", "")))
    if native is None:
        return
    for key in keys:
        del state_dict[key]
    state_dict.update({prefix + key: value for key, value in native.items()})


def lengths_from_attention_mask(
    attention_mask: Tensor | None, lengths: Tensor | None, waveforms: Tensor
) -> Tensor | None:
    """Valid samples per row of an HF `attention_mask` [batch, sample] (1 = valid sample, right
    padding); `lengths` when no mask is given. Both given is an error."""
    if attention_mask is None:
        return lengths
    if lengths is not None:
        raise DataError("give lengths or attention_mask, not both")
    mask = torch.as_tensor(attention_mask, device=waveforms.device)
    if tuple(mask.shape) != tuple(waveforms.shape):
        raise DataError(
            f"attention_mask must have the waveforms' shape {tuple(waveforms.shape)} (1 = valid "
            f"sample); got {tuple(mask.shape)}"
        )
    valid = mask != 0
    counts = valid.sum(1)
    positions = torch.arange(mask.shape[1], device=mask.device)
    prefix = positions.unsqueeze(0) < counts.unsqueeze(1)
    if not bool((valid == prefix).all()):
        rows = (valid != prefix).any(1).nonzero().flatten().tolist()
        raise DataError(
            f"attention_mask rows {rows[:8]} are not 1...1 0...0: only right padding is "
            "supported (pass lengths for other layouts after moving the padding to the end)"
        )
    return counts
