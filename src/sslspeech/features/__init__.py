"""Frame features: Kaldi-compatible MFCC, model layer features, and the sharded feature store."""

from sslspeech.features.mfcc import mfcc
from sslspeech.features.store import FeatureStore, StoreWriter, open_store

__all__ = ["FeatureStore", "StoreWriter", "mfcc", "open_store"]
