"""Audio data: manifests, decoding, datasets, bucketed batching, masks and collation.

Names are resolved on first use so that `sslspeech.data.manifest` stays importable without torch.
"""

from sslspeech.utils.lazy import lazy_getattr

_LAZY = {
    "Manifest": ".manifest",
    "ManifestEntry": ".manifest",
    "read_manifest": ".manifest",
    "iter_manifest": ".manifest",
    "write_manifest": ".manifest",
    "load_audio": ".audio",
    "audio_info": ".audio",
    "standardize": ".audio",
    "resample_audio": ".audio",
    "create_manifest": ".scan",
    "check_manifest": ".check",
    "AudioDataset": ".dataset",
    "BucketBatchSampler": ".sampler",
    "Collator": ".collate",
    "compute_mask": ".masking",
    "compute_mask_indices": ".masking",
}

__all__ = list(_LAZY)

__getattr__ = lazy_getattr(__name__, _LAZY)
