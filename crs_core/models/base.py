"""The interface every recommender implements, so baselines and neural backbones are interchangeable.

Modelled on `implicit`'s RecommenderBase: `fit` once on training samples and a catalog, then `score`
any samples against that catalog. A saved model is a directory holding `model.json` (name and
hyper-parameters), `item_ids.npy` (the catalog it was fitted on) and one `.npy` file per state array.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from crs_core.artifacts import atomic_dir
from crs_core.errors import DataError
from crs_core.schema import Catalog, Sample

MODEL_FILE = "model.json"
ITEM_IDS_FILE = "item_ids.npy"


class NotFittedError(RuntimeError):
    """A model was asked to score or save before `fit` (or `load`) gave it a catalog and weights."""


def read_config(directory: Path) -> dict[str, Any]:
    """The `model.json` of a saved model: {"name", "params", "arrays"}."""
    path = Path(directory) / MODEL_FILE
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(path, f"not valid JSON ({exc.msg})", line=exc.lineno) from exc
    if not isinstance(config, dict) or not {"name", "params", "arrays"} <= config.keys():
        raise DataError(path, "not a saved model (needs keys 'name', 'params', 'arrays')")
    return config


class Recommender(abc.ABC):
    """Scores every catalog item for each sample; higher means more likely to be recommended."""

    name: ClassVar[str]

    def __init__(self) -> None:
        self._item_ids: np.ndarray | None = None
        self._columns: dict[int, int] = {}

    @abc.abstractmethod
    def params(self) -> dict[str, Any]:
        """Hyper-parameters, JSON-serialisable and accepted by `__init__` (saved in `model.json`)."""

    @abc.abstractmethod
    def fit(self, train: Sequence[Sample], catalog: Catalog) -> Recommender:
        """Learn from `train` (labels are `sample.targets`) over `catalog`; returns self."""

    @abc.abstractmethod
    def score(self, samples: Sequence[Sample]) -> np.ndarray:
        """Finite float32 scores of shape (len(samples), len(catalog)), columns in catalog order."""

    @abc.abstractmethod
    def _state(self) -> dict[str, np.ndarray]:
        """The arrays `score` needs, keyed by file stem (saved with `np.save`)."""

    @abc.abstractmethod
    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore what `_state` returned."""

    @property
    def is_fitted(self) -> bool:
        return self._item_ids is not None

    def _bind_catalog(self, catalog: Catalog) -> None:
        """Remember the catalog's item order: it defines the score columns from now on."""
        self._set_item_ids(catalog.item_ids)

    def _set_item_ids(self, item_ids: np.ndarray) -> None:
        self._item_ids = np.asarray(item_ids, dtype=np.int64).copy()
        self._columns = {int(item_id): col for col, item_id in enumerate(self._item_ids)}

    def _require_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(f"{self.name} model is not fitted: call fit() or load() first")

    def _columns_of(self, item_ids: Iterable[int]) -> np.ndarray:
        """Sorted, de-duplicated columns of the catalog items in `item_ids`; other ids are ignored,
        since contexts legitimately mention movies outside the recommendable catalog."""
        cols = {self._columns[i] for i in item_ids if i in self._columns}
        return np.array(sorted(cols), dtype=np.int64)

    def check_catalog(self, catalog: Catalog) -> None:
        """Raise ValueError unless `catalog` has exactly the items, in the order, seen in fit."""
        self._require_fitted()
        assert self._item_ids is not None
        ids = catalog.item_ids
        if np.array_equal(ids, self._item_ids):
            return
        if len(ids) != len(self._item_ids):
            detail = f"{len(ids)} items, model has {len(self._item_ids)}"
        else:
            col = int(np.flatnonzero(ids != self._item_ids)[0])
            detail = f"column {col} is item {ids[col]}, model has item {self._item_ids[col]}"
        raise ValueError(f"{self.name} model was fitted on a different catalog: {detail}")

    def save(self, directory: Path) -> None:
        """Write the model to `directory`, replacing any previous save there.

        Files go into a sibling temp directory that is then renamed into place, so a crash never
        leaves a half-written model where a reader expects a complete one.
        """
        self._require_fitted()
        with atomic_dir(directory) as tmp:
            state = self._state()
            for key, array in state.items():
                np.save(tmp / f"{key}.npy", array, allow_pickle=False)
            np.save(tmp / ITEM_IDS_FILE, self._item_ids, allow_pickle=False)
            config = {"name": self.name, "params": self.params(), "arrays": sorted(state)}
            (tmp / MODEL_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
            self._write_extra(tmp)

    def _write_extra(self, directory: Path) -> None:  # noqa: B027 - optional hook, a no-op unless overridden
        """Hook for files beyond numpy arrays (e.g. a transformer's weights), written inside the same
        temp directory so the whole model still appears atomically."""

    @classmethod
    def load(cls, directory: Path, catalog: Catalog | None = None) -> Recommender:
        """Read a model saved by `save` (call it on the concrete class, or use `load_model`).

        With `catalog`, also `check_catalog` it, since scores are only meaningful in the saved order.
        """
        directory = Path(directory)
        config = read_config(directory)
        if config["name"] != cls.name:
            raise ValueError(f"{directory} holds a {config['name']!r} model, not {cls.name!r}")
        model = cls(**config["params"])
        model._set_item_ids(np.load(directory / ITEM_IDS_FILE, allow_pickle=False))
        arrays = {key: np.load(directory / f"{key}.npy", allow_pickle=False) for key in config["arrays"]}
        model._set_state(arrays)
        if catalog is not None:
            model.check_catalog(catalog)
        return model

