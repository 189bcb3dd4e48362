"""Recommendation evaluation under the FNSCRS `final_evaluation` protocol."""

from __future__ import annotations

from crs_core.evaluation.predictions import read_predictions, write_predictions
from crs_core.evaluation.protocol import (
    DEFAULT_KS,
    TOP_N,
    VARIANTS,
    evaluate_rankings,
    evaluate_scores,
    format_table,
    rank_catalog,
)

__all__ = [
    "DEFAULT_KS",
    "TOP_N",
    "VARIANTS",
    "evaluate_rankings",
    "evaluate_scores",
    "format_table",
    "rank_catalog",
    "read_predictions",
    "write_predictions",
]
