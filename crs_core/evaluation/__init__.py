"""Recommendation evaluation under the FNSCRS `final_evaluation` protocol, and its model-selection metric."""

from __future__ import annotations

from crs_core.evaluation.predictions import read_predictions, write_predictions
from crs_core.evaluation.protocol import (
    DEFAULT_KS,
    TIE_ORDERS,
    TOP_N,
    VARIANTS,
    entropy,
    evaluate_rankings,
    evaluate_scores,
    format_table,
    rank_catalog,
    tied_rows,
)
from crs_core.evaluation.selection import (
    selection_key,
    selection_rankings,
    selection_rule,
    selection_scores,
)

__all__ = [
    "DEFAULT_KS",
    "TIE_ORDERS",
    "TOP_N",
    "VARIANTS",
    "entropy",
    "evaluate_rankings",
    "evaluate_scores",
    "format_table",
    "rank_catalog",
    "read_predictions",
    "selection_key",
    "selection_rankings",
    "selection_rule",
    "selection_scores",
    "tied_rows",
    "write_predictions",
]
