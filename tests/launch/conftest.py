"""The launch tests use the training tests' tone corpus and thread setting."""

from tests.training.conftest import one_thread, tone_manifest

__all__ = ["one_thread", "tone_manifest"]
