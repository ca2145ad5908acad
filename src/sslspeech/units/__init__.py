"""Discrete units: k-means on frame features, transcription, and merging into manifests."""

from sslspeech.units.assign import transcribe
from sslspeech.units.kmeans import KMeans, fit_store
from sslspeech.units.merge import merge

__all__ = ["KMeans", "fit_store", "merge", "transcribe"]
