"""The feature-based student (`student.kind: features`): gradient-boosted trees on `features.FEATURE_NAMES`,
with an isotonic map of their output onto the teacher's 0-4 scale.

Why this student: it learns what the LLM judge rewards from ~5k judgments far better than a small
cross-encoder fine-tuned on them, and it scores the whole catalog for every train context in a minute.

Honest numbers: agreement is measured out of fold, with folds grouped by context (a context's pairs are
never on both sides), and the isotonic calibration is fitted on those out-of-fold predictions, so a
calibrated score s means "pairs scored s got s from the LLM on average" on contexts the model never saw.
The final model is then fitted on all pairs.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.isotonic import IsotonicRegression
from sklearn.model_selection import GroupKFold

from crs_core.errors import ConfigError
from crs_core.student import META_FILE, NUM_LEVELS, read_meta, write_meta

MODEL_FILE = "model.pkl"
RELEVANT = 3  # the judge's "relevant": a synthetic positive should be a pair the LLM scores >= 3


def fidelity(truth: np.ndarray, pred: np.ndarray, gold: np.ndarray, relevant: float = RELEVANT) -> dict:
    """Student vs teacher: Spearman (all pairs and non-gold pairs only, so a gold shortcut cannot inflate it),
    MAE, and the precision of the student's ">= relevant" calls (share the teacher also scored >= relevant)."""
    truth, pred, gold = np.asarray(truth, float), np.asarray(pred, float), np.asarray(gold, bool)

    def rho(a: np.ndarray, b: np.ndarray) -> float | None:
        return None if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0 else float(spearmanr(a, b)[0])

    calls = pred >= relevant
    return {"pairs": int(len(truth)), "spearman": rho(truth, pred), "spearman_non_gold": rho(truth[~gold], pred[~gold]),
            "mae": float(np.abs(truth - pred).mean()) if len(truth) else None,
            "calls_relevant": int(calls.sum()),
            "precision_relevant": float((truth[calls] >= relevant).mean()) if calls.any() else None}


def synthetic_precision(truth: np.ndarray, pred: np.ndarray, gold: np.ndarray, tau: float,
                        relevant: float = RELEVANT) -> tuple[float | None, int]:
    """(share of the would-be new positives - non-gold pairs scoring >= tau - that the teacher scored
    >= relevant, how many there are)."""
    truth, pred, gold = np.asarray(truth, float), np.asarray(pred, float), np.asarray(gold, bool)
    chosen = (~gold) & (pred >= tau)
    return (float((truth[chosen] >= relevant).mean()) if chosen.any() else None), int(chosen.sum())


def grouped_folds(groups: np.ndarray, folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train rows, held-out rows) per fold; a group (a context) is never on both sides."""
    return list(GroupKFold(n_splits=folds).split(np.zeros(len(groups)), groups=groups))


@dataclass
class FeatureScorer:
    """Trees + isotonic calibration; `predict` gives a calibrated expected teacher score in [0, 4]."""

    feature_names: tuple[str, ...]
    params: dict
    model: HistGradientBoostingRegressor | None = None
    calibration: IsotonicRegression | None = None
    kind: str = "features"

    def _trees(self, seed: int) -> HistGradientBoostingRegressor:
        return HistGradientBoostingRegressor(random_state=seed, **self.params)

    def cross_validate(self, x: np.ndarray, y: np.ndarray, groups: np.ndarray, folds: int, seed: int) -> np.ndarray:
        """Out-of-fold raw predictions, folds grouped by context (GroupKFold)."""
        oof = np.zeros(len(y))
        for train, held in grouped_folds(groups, folds):
            oof[held] = self._trees(seed).fit(x[train], y[train]).predict(x[held])
        return oof

    def fit(self, x: np.ndarray, y: np.ndarray, groups: np.ndarray, folds: int, seed: int) -> np.ndarray:
        """Fit on every pair; returns the CALIBRATED out-of-fold predictions (what the reported numbers use)."""
        if len(np.unique(groups)) < folds:
            raise ConfigError(f"student.folds: {folds} folds need at least {folds} judged contexts, the teacher "
                              f"rated pairs of {len(np.unique(groups))}: lower student.folds or label more contexts")
        oof_raw = self.cross_validate(x, y, groups, folds, seed)
        self.calibration = IsotonicRegression(y_min=0.0, y_max=NUM_LEVELS - 1, out_of_bounds="clip").fit(oof_raw, y)
        self.model = self._trees(seed).fit(x, y)
        return self.calibration.predict(oof_raw)

    def predict(self, x: np.ndarray) -> np.ndarray:
        if self.model is None or self.calibration is None:
            raise RuntimeError("the feature student is not fitted")
        return self.calibration.predict(self.model.predict(x)).astype(np.float32)

    def save(self, path: Path, meta: dict) -> None:
        """Model + calibration (pickle, written by this project only) and `student.json` with the feature names."""
        path = Path(path)
        with open(path / MODEL_FILE, "wb") as f:
            pickle.dump({"model": self.model, "calibration": self.calibration}, f)
        write_meta(path, {**meta, "kind": self.kind, "feature_names": list(self.feature_names), "params": self.params})

    @classmethod
    def load(cls, path: Path) -> FeatureScorer:
        meta = read_meta(path)
        if meta.get("kind") != "features":
            raise ValueError(f"{Path(path) / META_FILE}: kind {meta.get('kind')!r} is not a feature student")
        with open(Path(path) / MODEL_FILE, "rb") as f:
            parts = pickle.load(f)
        return cls(tuple(meta["feature_names"]), meta["params"], parts["model"], parts["calibration"])
