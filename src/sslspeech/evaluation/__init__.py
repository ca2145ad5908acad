"""Evaluation: ABX phone discriminability (fastabx-exact) and unit quality against alignments."""

from sslspeech.evaluation.abx import AbxResult, abx, abx_result
from sslspeech.evaluation.items import Items, read_items
from sslspeech.evaluation.quality import (
    joint_counts,
    plot_phone_unit_heatmap,
    quality_from_counts,
    read_alignments,
    read_units,
    unit_quality,
)

__all__ = [
    "AbxResult",
    "Items",
    "abx",
    "abx_result",
    "joint_counts",
    "plot_phone_unit_heatmap",
    "quality_from_counts",
    "read_alignments",
    "read_items",
    "read_units",
    "unit_quality",
]
