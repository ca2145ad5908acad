"""Audio data: manifests, decoding, datasets, bucketed batching, masks and collation.

Names are resolved on first use so that `sslspeech.data.manifest` stays importable without torch.
"""

from importlib import import_module
from typing import Any

_LAZY = {
    "Manifest": "manifest",
    "ManifestEntry": "manifest",
    "read_manifest": "manifest",
    "iter_manifest": "manifest",
    "write_manifest": "manifest",
    "load_audio": "audio",
    "audio_info": "audio",
    "standardize": "audio",
    "resample_audio": "audio",
    "create_manifest": "scan",
    "check_manifest": "check",
    "AudioDataset": "dataset",
    "BucketBatchSampler": "sampler",
    "Collator": "collate",
    "conv_frame_lengths": "collate",
    "compute_mask": "masking",
    "compute_mask_indices": "masking",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(f"sslspeech.data.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sslspeech.data' has no attribute {name!r}")
