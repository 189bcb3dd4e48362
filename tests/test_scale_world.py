"""benchmarks/scale_world.py: the world the cost curve runs on keeps its fixed parts fixed as it grows, and is
a valid prepared run (every artifact reads back under its schema)."""

from __future__ import annotations

import sys
from pathlib import Path

from crs_core.artifacts import read_table
from crs_core.data.prepared import load_prepared
from crs_core.schema import CANDIDATES_SCHEMA, TEACHER_SCHEMA

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from scale_world import CANDIDATES_PER_CONTEXT, TEACHER_CONTEXTS, write_world  # noqa: E402


def test_the_world_grows_only_in_train_contexts(tmp_path: Path) -> None:
    sizes = {"small": TEACHER_CONTEXTS, "large": TEACHER_CONTEXTS + 50}
    small, large = (write_world(tmp_path / name, n, n_items=300) for name, n in sizes.items())
    a, b = load_prepared(small.root), load_prepared(large.root)
    assert a.catalog.items == b.catalog.items and len(a.catalog) == 300
    assert a.samples["valid"] == b.samples["valid"] and a.samples["test"] == b.samples["test"]
    assert b.samples["train"][:TEACHER_CONTEXTS] == a.samples["train"]
    assert len(b.samples["train"]) == TEACHER_CONTEXTS + 50
    teacher = [read_table(run.path("teacher.parquet"), TEACHER_SCHEMA) for run in (small, large)]
    assert teacher[0].equals(teacher[1]) and teacher[0].num_rows == 2000
    assert set(teacher[0].column("score").to_pylist()) <= {0.0, 1.0, 2.0, 3.0, 4.0}
    candidates = read_table(large.path("candidates", "train.parquet"), CANDIDATES_SCHEMA)
    assert candidates.num_rows == (TEACHER_CONTEXTS + 50) * CANDIDATES_PER_CONTEXT
    cited = {s.sample_id: set(s.context_items) for s in b.samples["train"]}
    assert not any(i in cited[s] for s, i in zip(candidates["sample_id"].to_pylist(),
                                                  candidates["item_id"].to_pylist()))
