"""Student scorers, the `score` stage on Ray Data and the `synthesize` threshold, on the toy world of
tests/student_world.py (the LLM student's own tests: tests/test_llm_scorer.py)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from student_world import (
    CATALOG,
    SAMPLES,
    SCIFI_ASK,
    student_config,
    teacher_rows,
    triplets as make_triplets,
    write_run,
)

from crs_core.artifacts import read_table, write_table
from crs_core.config import ActorPoolConfig, Config, load_config
from crs_core.errors import DataError
from crs_core.registry import dataset_config
from crs_core.schema import (
    CANDIDATES_SCHEMA,
    SCORES_SCHEMA,
    SYNTHETIC_SCHEMA,
    TEACHER_SCHEMA,
)
from crs_core.stages.distill import STAGE as DISTILL
from crs_core.stages.score import (
    STAGE as SCORE,
    candidate_rows,
    format_score,
    load_item_texts,
    score_one_pair_at_a_time,
    score_rows,
    score_with_ray,
)
from crs_core.stages.synthesize import STAGE as SYNTHESIZE, expansion, format_expansion, synthesize
from crs_core.student import (
    StudentScorer,
    expected_score,
    load_scorer,
    soft_targets,
)
from crs_core.student.cross_encoder import CrossEncoderScorer
from crs_core.student.train import (
    Triplet,
    average_ranks,
    save_student,
    spearman,
    split_holdout,
    teacher_triplets,
    train_student,
)
from crs_core.text import item_text


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """On 2 shared cores, busy-waiting OpenMP threads made a training step ~10x slower when another process
    ran; one thread keeps these tests' time steady (Ray actors get their own thread count from Ray)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def triplets() -> list[Triplet]:
    return make_triplets()


# --- score mapping and readout ---------------------------------------------------------------------


def test_expected_score_by_hand() -> None:
    probs = np.array([[0, 0, 0.5, 0.5, 0], [1, 0, 0, 0, 0], [0, 0, 0, 0, 1], [0.2] * 5])
    np.testing.assert_allclose(expected_score(probs), [2.5, 0.0, 4.0, 2.0])


def test_soft_targets_keep_the_teacher_score_as_expectation() -> None:
    targets = soft_targets([4.0, 0.0, 2.5])
    np.testing.assert_allclose(targets, [[0, 0, 0, 0, 1], [1, 0, 0, 0, 0], [0, 0, 0.5, 0.5, 0]])
    np.testing.assert_allclose(expected_score(targets), [4.0, 0.0, 2.5])
    for bad in (math.nan, 4.5, -1.0):
        with pytest.raises(ValueError):
            soft_targets([bad])


def test_spearman_with_ties_by_hand() -> None:
    np.testing.assert_array_equal(average_ranks(np.array([10, 20, 20, 30])), [1, 2.5, 2.5, 4])
    # ranks of b = [1, 2, 3.5, 5, 3.5]; centred dot products 8, 10 and 9.5
    assert spearman([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]) == pytest.approx(8 / math.sqrt(95))
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3], [2, 2, 2]) is None


def test_holdout_keeps_contexts_whole(triplets: list[Triplet]) -> None:
    train, held = split_holdout(triplets, 0.34, seed=3)
    held_ids = {t.sample_id for t in held}
    assert len(held_ids) == 2 and not held_ids & {t.sample_id for t in train}
    assert split_holdout(triplets, 0.34, seed=3) == (train, held)


# --- cross-encoder -----------------------------------------------------------------------------------


def test_cross_encoder_trains_and_round_trips(triplets: list[Triplet], tmp_path: Path) -> None:
    torch.manual_seed(0)
    scorer = CrossEncoderScorer.from_pretrained(max_length=48)
    few = [t for t in triplets if t.item_id in (11, 12, 21, 22)]  # 24 pairs, half rated 4, half 0
    metrics = train_student(scorer, few, student_config(epochs=3, learning_rate=2e-4, holdout_fraction=0.0), seed=0)
    assert metrics["train_pairs"] == 24 and metrics["failed_excluded"] == 0
    assert metrics["epoch_losses"][-1] < metrics["epoch_losses"][0]
    contexts, items = [t.context for t in triplets[:10]], [t.item_text for t in triplets[:10]]
    before = scorer.score_pairs(contexts, items)
    save_student(scorer, tmp_path / "student")
    save_student(scorer, tmp_path / "student")  # replacing an existing student also works
    assert sorted(p.name for p in tmp_path.iterdir()) == ["student"]
    np.testing.assert_allclose(load_scorer(tmp_path / "student").score_pairs(contexts, items), before, atol=1e-6)


# --- failed teacher rows -------------------------------------------------------------------------------


class _RecordingScorer(StudentScorer):
    """Learns only a bias over the five levels and records which pairs training fed it."""

    kind = "recording"

    def __init__(self):
        self.bias = torch.nn.Parameter(torch.zeros(5))
        self.training = False
        self.seen: set[tuple[str, str]] = set()

    def logits(self, contexts, item_texts):
        if self.training:
            self.seen.update(zip(contexts, item_texts))
        return self.bias.expand(len(contexts), 5)

    def trainable_parameters(self):
        return [self.bias]

    def train(self, mode: bool = True) -> None:
        self.training = mode

    def save(self, path: Path) -> None:
        raise NotImplementedError


def test_failed_teacher_rows_are_excluded_not_zero() -> None:
    failed = (("s0", 11), ("s0", 12), ("s1", 21))
    table = pa.Table.from_pylist(teacher_rows(failed), schema=TEACHER_SCHEMA)
    # a failed row that still carries a number is failed too
    table = table.set_column(2, "score", pa.array([0.0 if (r["sample_id"], r["item_id"]) == ("s0", 11) else r["score"]
                                                    for r in table.to_pylist()], pa.float64()))
    triplets = teacher_triplets(table, SAMPLES, CATALOG)
    assert {(t.sample_id, t.item_id) for t in triplets if t.score is None} == set(failed)
    scorer = _RecordingScorer()
    metrics = train_student(scorer, triplets, student_config(holdout_fraction=0.0), seed=0)
    assert metrics["failed_excluded"] == 3 and metrics["train_pairs"] == 57
    failed_pairs = {(t.context, t.item_text) for t in triplets if t.score is None}
    ok_pairs = {(t.context, t.item_text) for t in triplets if t.score is not None}
    assert scorer.seen == ok_pairs and not scorer.seen & failed_pairs
    with pytest.raises(ValueError, match="no usable teacher triplets"):
        train_student(scorer, [t for t in triplets if t.score is None], student_config(), seed=0)


def test_candidate_rows_group_by_context_in_rank_order() -> None:
    table = pa.Table.from_pylist([{"sample_id": "s1", "item_id": 22, "rank": 1, "similarity": 0.5},
                                  {"sample_id": "s0", "item_id": 13, "rank": 0, "similarity": 0.9},
                                  {"sample_id": "s1", "item_id": 21, "rank": 0, "similarity": 0.7}],
                                 schema=CANDIDATES_SCHEMA)
    rows = candidate_rows(table, SAMPLES, set(CATALOG.item_ids.tolist()))
    assert [(r["sample_id"], r["item_ids"]) for r in rows] == [("s0", [13]), ("s1", [21, 22])]
    assert rows[0]["context"].endswith(f"User: {SCIFI_ASK}")
    with pytest.raises(DataError, match="out of step"):
        candidate_rows(table, SAMPLES, {13, 21})


# --- Ray Data scoring ------------------------------------------------------------------------------------


def test_ray_scoring_equals_in_process(ray_local, tmp_path: Path) -> None:
    run = write_run(tmp_path)
    torch.manual_seed(1)
    scorer = CrossEncoderScorer.from_pretrained(max_length=48)
    save_student(scorer, tmp_path / "student")
    candidates = read_table(run.path("candidates", "train.parquet"), CANDIDATES_SCHEMA)
    rows = candidate_rows(candidates, SAMPLES, set(CATALOG.item_ids.tolist()))
    assert [r["item_ids"] for r in rows] == [CATALOG.item_ids.tolist()] * len(SAMPLES)
    texts = load_item_texts(run.path("items.parquet"))
    assert texts[11] == item_text(CATALOG.get(11))
    local = score_rows(scorer, rows, texts, pairs_per_forward=10)
    pool = ActorPoolConfig(actors=2, num_cpus=0.5, batch_size=10)
    remote, fresh = score_with_ray(rows, tmp_path / "student", run.path("items.parquet"), pool, tmp_path / "parts")
    assert remote.num_rows == fresh == 60 and remote.schema.equals(SCORES_SCHEMA)

    def as_dict(table: pa.Table) -> dict:
        return {(s, i): v for s, i, v in zip(*(table.column(c).to_pylist() for c in ("sample_id", "item_id", "score")))}

    ray_scores, local_scores = as_dict(remote), as_dict(local)
    assert ray_scores.keys() == local_scores.keys() and len(ray_scores) == 60
    np.testing.assert_allclose([ray_scores[k] for k in local_scores], list(local_scores.values()), atol=1e-5)
    unbatched = as_dict(score_one_pair_at_a_time(scorer, rows[:1], texts))
    np.testing.assert_allclose([unbatched[k] for k in unbatched], [local_scores[k] for k in unbatched], atol=1e-5)

    # Resume: the parts of a killed run (first context finished, a half-written temp file left behind) are
    # kept; only the other contexts are scored; every pair comes back exactly once.
    parts = tmp_path / "resume"
    first = score_rows(scorer, rows[:1], texts, pairs_per_forward=10)
    write_table(parts / "part-000000.parquet", first, SCORES_SCHEMA)
    (parts / ".part-000001.parquet.x.tmp").write_bytes(b"PAR1 truncated")
    resumed, fresh = score_with_ray(rows, tmp_path / "student", run.path("items.parquet"), pool, parts)
    assert fresh == 60 - first.num_rows and resumed.num_rows == 60
    assert as_dict(resumed).keys() == local_scores.keys()
    np.testing.assert_allclose([as_dict(resumed)[k] for k in local_scores], list(local_scores.values()), atol=1e-5)


# --- threshold -------------------------------------------------------------------------------------------


def _scores(rows: list[tuple[str, int, float]]) -> pa.Table:
    return pa.Table.from_pylist([{"sample_id": s, "item_id": i, "score": v} for s, i, v in rows], schema=SCORES_SCHEMA)


HAND_SCORES = _scores([
    ("s0", 13, 3.9), ("s0", 14, 3.5), ("s0", 15, 3.9), ("s0", 11, 4.0), ("s0", 12, 4.0),
    ("s0", 21, 2.0), ("s0", 22, 1.99),
    ("s1", 22, 3.49), ("s1", 23, 2.5),
])


def test_threshold_by_hand() -> None:
    samples = SAMPLES[:3]  # s2 has no scores at all
    # s0: 11 is a context item and 12 already a target; 13 and 15 tie at 3.9 (id order), 14 is exactly 3.5
    assert synthesize(samples, HAND_SCORES, 3.5) == [
        {"sample_id": "s0", "targets": [12, 13, 15, 14], "synthetic": [13, 15, 14]},
        {"sample_id": "s1", "targets": [21], "synthetic": []},
        {"sample_id": "s2", "targets": [14], "synthetic": []},
    ]
    assert synthesize(samples, HAND_SCORES, 2.0) == [
        {"sample_id": "s0", "targets": [12, 13, 15, 14, 21], "synthetic": [13, 15, 14, 21]},
        {"sample_id": "s1", "targets": [21, 22, 23], "synthetic": [22, 23]},
        {"sample_id": "s2", "targets": [14], "synthetic": []},
    ]
    summary = expansion(synthesize(samples, HAND_SCORES, 2.0), 2.0)
    assert (summary["original_labels"], summary["synthetic_labels"], summary["contexts_with_added"]) == (3, 9, 2)
    assert summary["ratio"] == 3.0
    text = format_expansion(summary, load_config([dataset_config("redial")]))
    assert "29,810" in text and "377,313" in text and "PARTIAL" in text
    with pytest.raises(ValueError, match="not train samples"):
        synthesize(samples[1:], HAND_SCORES, 3.5)


# --- stages ----------------------------------------------------------------------------------------------


def test_stages_skip_and_threshold_reruns_only_synthesize(ray_local, tmp_path: Path) -> None:
    run = write_run(tmp_path / "run")
    config = Config(seed=0, student=student_config())
    student = DISTILL.run(config, run)
    first = SCORE.run(config, run)
    assert not student.reused and not first.reused and first["pairs"] == 60
    assert student["train_pairs"] + student["holdout_pairs"] == 24
    assert sum(first["histogram"].values()) == 60
    assert "scored 60 pairs (retrieved candidates) of 6 contexts" in format_score(first)
    scores = read_table(run.path("scores.parquet"), SCORES_SCHEMA)
    assert scores.num_rows == 60 and 0.0 <= min(scores["score"].to_pylist()) <= max(scores["score"].to_pylist()) <= 4.0
    synth = SYNTHESIZE.run(config, run)
    assert not synth.reused and synth["original_labels"] == 7
    outputs = ("checkpoints/student/student.json", "scores.parquet", "synthetic.parquet")
    stamps = {p: run.path(p).stat().st_mtime_ns for p in outputs}

    assert all(stage.run(config, run).reused for stage in (DISTILL, SCORE, SYNTHESIZE))
    config.synthesize.threshold = 0.0  # every candidate that is not a target or context item
    assert DISTILL.run(config, run).reused and SCORE.run(config, run).reused
    synth = SYNTHESIZE.run(config, run)
    assert not synth.reused and synth["synthetic_labels"] == 60 - sum(len(s.context_items) for s in SAMPLES)
    assert {p: run.path(p).stat().st_mtime_ns for p in stamps if p != "synthetic.parquet"} == \
        {p: t for p, t in stamps.items() if p != "synthetic.parquet"}
    assert read_table(run.path("synthetic.parquet"), SYNTHETIC_SCHEMA).num_rows == len(SAMPLES)
