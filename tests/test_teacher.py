"""Teacher: prompt and strict score parsing, the KG rubric, cost/key hygiene, the `teach` stage, and the
OpenAI client against a REAL local server (`transformers serve` + SmolLM2-135M on 127.0.0.1).

SmolLM2-135M cannot judge relevance zero-shot (~35% pairwise accuracy): the server tests exercise the
real HTTP/client/retry/cache path, never the quality of its scores.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
from pathlib import Path

import pyarrow as pa
import pytest
from llm_server import LocalLLMServer, ScriptedServer, free_port

from crs_core.artifacts import RunDir, read_table, write_table
from crs_core.config import Config, TeacherConfig
from crs_core.errors import ConfigError
from crs_core.schema import (
    CANDIDATES_SCHEMA,
    ITEMS_SCHEMA,
    SAMPLES_SCHEMA,
    TEACHER_SCHEMA,
    Catalog,
    Item,
    Sample,
    items_to_table,
    samples_to_table,
)
from crs_core.stages.teach import STAGE as TEACH, spread_candidates, summarize
from crs_core.teacher import (
    PROMPT_VERSION,
    KGCalibration,
    KGTeacher,
    Label,
    LLMTeacher,
    Pair,
    ScoreParseError,
    TeacherCache,
    cost_usd,
    fit_calibration,
    kg_score,
    load_prompt,
    parse_score,
    resolve_api_key,
)
from crs_core.teacher.cache import CACHE_FILE, CachedAnswer, cache_key
from crs_core.teacher.prompt import parse_prompt

# A few-shot prompt that makes even SmolLM2 answer "Score: 2" (greedy), so the cache test has answers to keep.
FEW_SHOT_PROMPT = """# test prompt: two worked examples teach the answer format
[system]
Rate the candidate movie for the user. Reply with one line: Score: N
[user]
Candidate: Alien (1979) Genres: horror, sci-fi.
[assistant]
Score: 2
[user]
Candidate: Up (2009) Genres: animation.
[assistant]
Score: 2
[user]
Conversation:
$context

Candidate: $item
"""


def item(item_id: int, title: str, genres=(), directors=(), stars=()) -> Item:
    description = f"{title} Genres: {', '.join(genres)}. Directed by {', '.join(directors)}. Plot: a story."
    return Item(item_id, title, description, tuple(genres), tuple(directors), tuple(stars), "a story.")


CATALOG = Catalog([
    item(1, "The Conjuring (2013)", ["horror", "thriller"], ["James Wan"], ["Vera Farmiga", "Patrick Wilson"]),
    item(2, "Insidious (2010)", ["horror"], ["James Wan"], ["Patrick Wilson", "Rose Byrne"]),
    item(3, "Notting Hill (1999)", ["romance", "comedy"], ["Roger Michell"], ["Julia Roberts"]),
    item(4, "Target Alpha (2001)", ["drama"], ["Ann Lee"], ["Bo Park"]),
    item(5, "Target Beta (2002)", ["drama", "history"], ["Cy Diaz"], ["Di Eng"]),
    item(6, "Saw (2004)", ["horror", "mystery"], ["James Wan"], ["Cary Elwes"]),
])
SAMPLE = Sample(
    sample_id="train-1#4", dialog_id="train-1", turn_id=4,
    context=("Hi! What do you like?", "I love scary movies. The Conjuring was great, anything like it?"),
    context_roles=("recommender", "seeker"), context_items=(1,), context_entities=("horror",), targets=(4, 5),
)


# ---------------------------------------------------------------------------------------------- prompt
@pytest.mark.parametrize("text, expected", [
    ("Score: 3", 3.0),
    ("The user wants horror.\nIt fits.\nScore: 4", 4.0),
    ("score: 0", 0.0),
    ("SCORE:2", 2.0),
    ("Score: 3.0", 3.0),
    ("reasoning\nScore: 1  \n\n", 1.0),
    ("Score: 1\nOn reflection:\nScore: 2", 2.0),
])
def test_parse_score_accepts_only_a_final_score_line(text, expected):
    assert parse_score(text) == expected


@pytest.mark.parametrize("text", [
    "", "   \n", "Score: 5", "Score: 3.5", "Score: -1", "**Score: 3**", "Score: 3\nHope this helps!",
    "The score is 3", "Score: three", "Score: 3/4", "Score: 34", "Score:", "Scores: 3", "Final Score: 3", "Score 3",
])
def test_parse_score_rejects_anything_else(text):
    with pytest.raises(ScoreParseError):
        parse_score(text)


def test_prompt_version_follows_the_file_text():
    text = (Path(__file__).resolve().parent.parent / "crs_core" / "prompts" / "teacher_v1.txt").read_text()
    assert PROMPT_VERSION == parse_prompt(text, "teacher_v1").version and PROMPT_VERSION.startswith("v1-")
    assert parse_prompt(text + "\n# edited\n", "teacher_v1").version != PROMPT_VERSION


def test_prompt_has_context_and_candidate_but_no_target_titles():
    prompt = load_prompt()
    messages = prompt.render(SAMPLE, CATALOG.get(6))
    assert [m["role"] for m in messages][0] == "system" and messages[-1]["role"] == "user"
    request = messages[-1]["content"]
    assert "User: I love scary movies. The Conjuring was great" in request
    assert "System: Hi! What do you like?" in request
    assert CATALOG.get(6).description in request and "Score: N" in request
    everything = "\n".join(m["content"] for m in messages)
    assert "Target Alpha" not in everything and "Target Beta" not in everything
    # rating a gold target shows that item only, never the turn's other targets
    everything = "\n".join(m["content"] for m in prompt.render(SAMPLE, CATALOG.get(4)))
    assert "Target Alpha" in everything and "Target Beta" not in everything


@pytest.mark.parametrize("text, problem", [
    ("[system]\nRate.\n[user]\n$context only\n", "lacks $item"),
    ("[system]\nRate.\n[user]\n$context $item\n[assistant]\nScore: 1\n", "must be [user]"),
    ("Rate this.\n[user]\n$context $item\n", "sections"),
    ("[user]\n$context $item $other\n", "placeholder"),
])
def test_bad_prompt_files_fail_early(text, problem):
    with pytest.raises(ConfigError, match=problem.replace("$", r"\$").replace("[", r"\[").replace("]", r"\]")):
        parse_prompt(text, "bad")


# ------------------------------------------------------------------------------------------ KG teacher
CALIBRATION = KGCalibration(similarities=(0.1, 0.2, 0.3, 0.4), cuts=(0.5, 1.0, 2.0, 3.0))


def test_kg_rubric_exact_values():
    # Insidious: horror 1/1 (2) + director James Wan (1) + star Patrick Wilson (1 of cap 2: 0.5) + similarity 0.35,
    # above 3 of the 4 calibration similarities (0.75) -> 4.25 points, past the last cut (3.0) -> 4
    score, rationale = kg_score(SAMPLE, CATALOG.get(2), CATALOG, CALIBRATION, similarity=0.35)
    assert score == 4.0 and "James Wan" in rationale and "Patrick Wilson" in rationale and "= 4.25" in rationale
    # Saw: horror 1/2 (1) + James Wan (1) = 2.0 points, exactly the cut of score 3 -> 3; a similarity below
    # every calibration similarity adds nothing
    assert kg_score(SAMPLE, CATALOG.get(6), CATALOG, CALIBRATION)[0] == 3.0
    assert kg_score(SAMPLE, CATALOG.get(6), CATALOG, CALIBRATION, similarity=0.05)[0] == 3.0
    # Notting Hill shares nothing: 0 points -> 0; the highest similarity alone gives 1.0 point -> 2
    assert kg_score(SAMPLE, CATALOG.get(3), CATALOG, CALIBRATION)[0] == 0.0
    assert kg_score(SAMPLE, CATALOG.get(3), CATALOG, CALIBRATION, similarity=0.4)[0] == 2.0
    # a named genre/person in context_entities counts even without a context movie
    bare = dataclasses.replace(SAMPLE, context_items=(), context_entities=("drama", "Ann Lee"))
    assert kg_score(bare, CATALOG.get(4), CATALOG, CALIBRATION)[0] == 4.0  # drama (2) + director (1) = 3.0: cut of 4


def test_kg_calibration_anchors_the_scale_on_the_accepted_movies():
    # Gold targets 4 and 5 share nothing with the context; their similarities 0.3 and 0.1 are the 3rd and 1st of
    # the four, so their points are 0.75 and 0.25. Percentiles 10/25/50/75 of (0.25, 0.75), linear:
    # 0.25 + 0.5 * p -> 0.30, 0.375, 0.50, 0.625.
    pairs = [(SAMPLE, CATALOG.get(4), 0.3), (SAMPLE, CATALOG.get(5), 0.1), (SAMPLE, CATALOG.get(2), 0.2),
             (SAMPLE, CATALOG.get(3), 0.4)]
    calibration = fit_calibration(pairs, CATALOG)
    assert calibration.similarities == (0.1, 0.2, 0.3, 0.4)
    assert calibration.cuts == pytest.approx((0.30, 0.375, 0.50, 0.625))
    # Insidious at similarity 0.2: 2 + 1 + 0.5 + 0.5 = 4.0 -> 4; the better-supported gold target scores 4 too,
    # the other one (0.25 points) 0
    assert [kg_score(SAMPLE, CATALOG.get(i), CATALOG, calibration, sim)[0]
            for i, sim in ((2, 0.2), (4, 0.3), (5, 0.1))] == [4.0, 4.0, 0.0]
    with pytest.raises(ValueError, match="gold target"):
        fit_calibration(pairs[2:], CATALOG)


def test_kg_teacher_rows_are_ok_zero_token_and_end_with_their_score():
    labels = KGTeacher(CATALOG, CALIBRATION).label_many([Pair(SAMPLE, CATALOG.get(i), 0.4) for i in (2, 3, 6)])
    for label in labels:
        assert label.status == "ok" and label.model == "kg-rubric-v2" and label.input_tokens == 0
        assert parse_score(label.rationale) == label.score
    assert labels[0].score > labels[1].score


# ------------------------------------------------------------------------------ cost, key, cache, retries
def test_cost_accounting_counts_only_fresh_tokens():
    cfg = TeacherConfig(usd_per_1k_input_tokens=0.005, usd_per_1k_output_tokens=0.015)
    assert cost_usd(1500, 500, cfg) == pytest.approx(0.0075 + 0.0075)
    config = Config(teacher=cfg)
    base = dict(model="m", prompt_version="p", rationale="Score: 3")
    labels = [Label("s", 1, 3.0, status="ok", input_tokens=1000, output_tokens=200, requests=2, **base),
              Label("s", 2, 3.0, status="ok", input_tokens=4000, output_tokens=400, cached=True, **base),
              Label("s", 3, None, status="failed", input_tokens=1000, output_tokens=0, requests=1, **base)]
    summary = summarize(labels, KGTeacher(CATALOG, CALIBRATION), config, contexts=1, seconds=0.0)
    assert (summary["input_tokens"], summary["output_tokens"]) == (2000, 200)
    assert summary["cost_usd"] == pytest.approx(2000 * 0.005 / 1000 + 200 * 0.015 / 1000)
    assert summary["failed"] == 1 and summary["failure_share"] == pytest.approx(1 / 3) and summary["cached"] == 1
    assert summary["score_histogram"] == {"0": 0, "1": 0, "2": 0, "3": 2, "4": 0} and summary["requests"] == 3


def test_api_key_only_from_the_environment(monkeypatch):
    monkeypatch.delenv("CRS_TEST_TEACHER_KEY", raising=False)
    remote = TeacherConfig(kind="openai", base_url="https://api.example.invalid/v1", api_key_env="CRS_TEST_TEACHER_KEY")
    with pytest.raises(ConfigError, match="CRS_TEST_TEACHER_KEY"):
        resolve_api_key(remote)
    assert resolve_api_key(dataclasses.replace(remote, base_url="http://127.0.0.1:9/v1")) == "EMPTY"
    monkeypatch.setenv("CRS_TEST_TEACHER_KEY", "sk-from-env")
    assert resolve_api_key(remote) == "sk-from-env"


def test_key_never_in_repr_logs_or_rows_and_connection_errors_retry(monkeypatch, caplog):
    secret = "sk-test-SECRETVALUE-0123456789"
    monkeypatch.setenv("CRS_TEST_TEACHER_KEY", secret)
    port = free_port()  # nothing listens there: connection refused, on loopback
    cfg = TeacherConfig(kind="openai", base_url=f"http://127.0.0.1:{port}/v1", api_key_env="CRS_TEST_TEACHER_KEY",
                        max_retries=2, backoff_s=0.01, timeout_s=5)
    caplog.set_level(logging.DEBUG)
    teacher = LLMTeacher(cfg)
    label = teacher.label(Pair(SAMPLE, CATALOG.get(2)))
    teacher.close()
    assert label.status == "failed" and label.score is None and label.requests == 3 and teacher.requests == 3
    assert "Connection" in label.error and "retry 2/2" in caplog.text
    for text in (repr(teacher), str(teacher), label.error, label.rationale, caplog.text, str(label.row())):
        assert "SECRETVALUE" not in text


def test_transient_http_errors_are_retried_and_client_errors_are_not():
    cfg = TeacherConfig(kind="openai", model="scripted", api_key_env="CRS_TEST_UNSET_KEY", max_retries=3,
                        backoff_s=0.01, timeout_s=10)
    with ScriptedServer([429, 503, 500, "Fits the request.\nScore: 3"]) as server:
        teacher = LLMTeacher(dataclasses.replace(cfg, base_url=server.base_url))
        label = teacher.label(Pair(SAMPLE, CATALOG.get(2)))
        teacher.close()
    assert server.requests == label.requests == 4 and label.status == "ok" and label.score == 3.0
    assert (label.input_tokens, label.output_tokens) == (10, 3)
    with ScriptedServer([400, "Score: 3"]) as server:
        teacher = LLMTeacher(dataclasses.replace(cfg, base_url=server.base_url))
        label = teacher.label(Pair(SAMPLE, CATALOG.get(2)))
        teacher.close()
    assert server.requests == label.requests == 1 and label.status == "failed" and "HTTP 400" in label.error


def test_cache_is_keyed_and_thread_safe(tmp_path):
    key = cache_key("v1-x", "m", "ctx", 7, "item text")
    assert key != cache_key("v1-y", "m", "ctx", 7, "item text") != cache_key("v1-x", "m", "ctx", 8, "item text")
    with TeacherCache(tmp_path / CACHE_FILE) as cache:
        def put(i: int) -> None:
            cache.put(f"k{i}", CachedAnswer(i % 5, f"Score: {i % 5}", i, 1), "m", "v1-x")
        threads = [threading.Thread(target=put, args=(i,)) for i in range(40)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(cache) == 40 and cache.get("k7") == CachedAnswer(2.0, "Score: 2", 7, 1)
    with TeacherCache(tmp_path / CACHE_FILE) as reopened:
        assert reopened.get("k39").answer == "Score: 4" and reopened.get("missing") is None


def test_spread_candidates_keeps_gold_and_covers_ranks():
    ranked = [(100 + r, 1.0 - r / 50) for r in range(50)]
    picked = spread_candidates(ranked, {103, 140}, 10, random.Random(0))
    ids = [i for i, _ in picked]
    assert len(ids) == 10 and {103, 140} <= set(ids) and ids == sorted(ids)
    others = sorted(i - 100 for i in ids if i not in (103, 140))
    assert others[0] < 6 and others[-1] >= 43  # one per band of 48/8 = 6 ranks: top and bottom both present
    assert spread_candidates(ranked[:3], set(), 10, random.Random(0)) == ranked[:3]


# ----------------------------------------------------------------------------------------------- stage
def make_run(root: Path, contexts: int = 3) -> RunDir:
    """A tiny run dir: the catalog above, `contexts` train samples, 5 candidates each (rank 0 best)."""
    run = RunDir(root)
    samples = [dataclasses.replace(SAMPLE, sample_id=f"train-{i}#4", dialog_id=f"train-{i}",
                                   context=(f"Hi! What do you like? ({i})", SAMPLE.context[1]))
               for i in range(contexts)]
    write_table(run.path("items.parquet"), items_to_table(CATALOG.items), ITEMS_SCHEMA)
    write_table(run.path("samples", "train.parquet"), samples_to_table(samples), SAMPLES_SCHEMA)
    rows = [{"sample_id": s.sample_id, "item_id": item_id, "rank": rank, "similarity": 0.6 - 0.1 * rank}
            for s in samples for rank, item_id in enumerate((2, 6, 1, 4, 3))]
    write_table(run.path("candidates", "train.parquet"), pa.Table.from_pylist(rows, schema=CANDIDATES_SCHEMA),
                CANDIDATES_SCHEMA)
    return run


def test_teach_stage_with_kg_teacher(tmp_path):
    run = make_run(tmp_path)
    config = Config(seed=3, teacher=TeacherConfig(kind="kg", contexts=2, candidates_per_context=3))
    summary = TEACH.run(config, run)
    table = read_table(run.path("teacher.parquet"), TEACHER_SCHEMA)
    rows = table.to_pylist()
    assert summary.reused is False and summary["pairs"] == len(rows) == 6 and summary["contexts"] == 2
    assert summary["ok"] == 6 and summary["failed"] == 0 and summary["cost_usd"] == 0.0
    assert sum(summary["score_histogram"].values()) == 6 and summary["model"] == "kg-rubric-v2"
    # calibrated on all 3 contexts' candidates except the context movie: the gold target 4 (similarity 0.3, at or
    # above 6 of the 12 similarities) has 0.5 points in each, so every cut is 0.5
    assert summary["kg_calibration"] == {"cuts": [0.5] * 4, "similarities": 12, "gold_percentiles": [10, 25, 50, 75]}
    for sample_id in {r["sample_id"] for r in rows}:
        items = {r["item_id"] for r in rows if r["sample_id"] == sample_id}
        assert 4 in items and 1 not in items  # the gold target kept; the context movie never a candidate
    assert TEACH.run(config, run).reused is True
    config.teacher.contexts = 3
    assert TEACH.run(config, run)["pairs"] == 9


# ------------------------------------------------------------------------------- against a real server
@pytest.fixture(scope="module")
def llm_server():
    from crs_core.llm_assets import smollm2_path

    with LocalLLMServer(smollm2_path()) as server:
        yield server


@pytest.fixture(scope="module")
def few_shot_prompt(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("prompts") / "fewshot.txt"
    path.write_text(FEW_SHOT_PROMPT)
    return str(path)


def server_config(server: LocalLLMServer, **overrides) -> TeacherConfig:
    return TeacherConfig(kind="openai", base_url=server.base_url, model=server.model,
                         api_key_env="CRS_TEST_UNSET_KEY", concurrency=2, timeout_s=120, backoff_s=0.01,
                         **overrides)


def test_server_binds_loopback_only(llm_server):
    addresses = llm_server.listening_addresses()
    assert addresses, "ss found no listening socket of the server"
    assert all(a.startswith("127.0.0.1:") for a in addresses), addresses


def test_real_round_trip_with_the_v1_prompt(llm_server):
    """One real request with the real rubric; SmolLM2 may or may not end with a valid line: both are legal."""
    before = llm_server.chat_requests()
    teacher = LLMTeacher(server_config(llm_server, max_retries=0, max_tokens=96))
    label = teacher.label(Pair(SAMPLE, CATALOG.get(2)))
    teacher.close()
    assert llm_server.wait_for_log(before + 1) == before + 1 and label.requests == 1
    assert label.prompt_version == PROMPT_VERSION and label.model == llm_server.model
    assert label.input_tokens > 100 and label.output_tokens > 0
    if label.status == "ok":
        assert label.score == parse_score(label.rationale) and label.error is None
    else:
        assert label.status == "failed" and label.score is None and "unparsable" in label.error


def test_unparsable_answer_is_reasked_then_failed(llm_server, few_shot_prompt, tmp_path):
    """max_tokens=1 cannot hold "Score: N": every answer is unparsable, deterministically."""
    before = llm_server.chat_requests()
    with TeacherCache(tmp_path / CACHE_FILE) as cache:
        teacher = LLMTeacher(server_config(llm_server, prompt=few_shot_prompt, max_retries=2, max_tokens=1),
                             cache=cache)
        label = teacher.label(Pair(SAMPLE, CATALOG.get(3)))
        teacher.close()
        assert len(cache) == 0  # failures are never cached
    assert llm_server.wait_for_log(before + 3) == before + 3 and teacher.requests == label.requests == 3
    assert label.status == "failed" and label.score is None and label.error.startswith("unparsable answer")
    assert label.output_tokens == 3  # tokens of every attempt are paid for and counted


def test_teach_stage_over_the_server_and_cached_rerun(llm_server, few_shot_prompt, tmp_path):
    run = make_run(tmp_path / "run")
    config = Config(teacher=server_config(llm_server, prompt=few_shot_prompt, contexts=2, candidates_per_context=2,
                                          max_tokens=8, usd_per_1k_input_tokens=0.5, usd_per_1k_output_tokens=1.5))
    before = llm_server.chat_requests()
    first = TEACH.run(config, run)
    assert first["pairs"] == 4 and first["ok"] == 4 and first["cached"] == 0, first
    assert llm_server.wait_for_log(before + first["requests"]) == before + first["requests"] >= before + 4
    assert first["cost_usd"] == pytest.approx((first["input_tokens"] * 0.5 + first["output_tokens"] * 1.5) / 1000)
    assert first["score_histogram"]["2"] == 4 and first["prompt_version"].startswith("fewshot-")

    second = TEACH.run(config, run, force=True)  # force: go through the teacher, which must hit the cache
    assert llm_server.wait_for_log(before + first["requests"] + 1, timeout_s=1.0) == before + first["requests"]
    assert second["requests"] == 0 and second["cached"] == 4 and second["cost_usd"] == 0.0
    rows = read_table(run.path("teacher.parquet"), TEACHER_SCHEMA).to_pylist()
    assert all(r["cached"] and r["status"] == "ok" and r["score"] == parse_score(r["rationale"]) for r in rows)
    assert TEACH.run(config, run).reused is True
