"""Discrete units: k-means on frame features, transcription (or SpidR/DinoSR codebook units), and
merging into manifests."""

from sslspeech.units.assign import transcribe, transcribe_codebooks
from sslspeech.units.kmeans import KMeans, fit_store
from sslspeech.units.merge import merge

__all__ = ["KMeans", "fit_store", "merge", "transcribe", "transcribe_codebooks"]
