"""The zero-shot LLM recommender and the iEvaLM-style user simulator: the seeker and its leak handling, the
turn loop with hand-computed cumulative recall, the `crs simulate` entry and its flags over the config, and
both end to end against a REAL local server (`transformers serve` + SmolLM2-135M on 127.0.0.1). Title
parsing, matching and the leak guard itself are in test_titles.py.

SmolLM2-135M can neither recommend nor role-play a user: the real-server tests check the harness
(requests, parsing, caching, the protocol), never the quality of what the model says.
"""

from __future__ import annotations

import json
from typing import ClassVar

import pytest
from llm_server import LocalLLMServer, ScriptedServer
from movie_catalog import CATALOG, FILLERS
from tiny_data import make_inspired

from crs_core.config import TeacherConfig
from crs_core.data.prepared import load_prepared
from crs_core.errors import ConfigError
from crs_core.evaluation import evaluate_rankings, read_predictions
from crs_core.llm_chat import AnswerCache, ChatEndpoint
from crs_core.llm_recommender import PROMPT_PLACEHOLDERS, ZeroShotRecommender
from crs_core.models import Popularity
from crs_core.prompt_file import load_chat_prompt, parse_chat_prompt
from crs_core.schema import RECOMMENDER, SEEKER, Sample
from crs_core.simulation import (
    SEEKER_PLACEHOLDERS,
    SavedModelRanker,
    Seeker,
    choose_samples,
    format_turn_table,
    seeker_text,
    seeker_view,
    simulate,
)
from crs_core.titles import TitleGuard
from rayjobs.cli import main as crs
from rayjobs.simulate import main as crs_simulate

S1 = Sample("d1#2", "d1", 2, ("Hi! What do you like?", "I love scary movies like The Conjuring."),
            (RECOMMENDER, SEEKER), context_items=(1,), targets=(2, 1))  # Insidious; The Conjuring was mentioned
S2 = Sample("d2#2", "d2", 2, ("Hello, what are you in the mood for?", "Something exciting, a big heist."),
            (RECOMMENDER, SEEKER), context_items=(), targets=(3,))  # Heat
TRAIN = [Sample(f"t{i}", f"t{i}", 1, ("hi",), (SEEKER,), (), targets=(8,) if i % 2 else (6, 7)) for i in range(6)]


def endpoint_settings(base_url: str, model: str = "scripted", **overrides) -> TeacherConfig:
    return TeacherConfig(kind="openai", base_url=base_url, model=model, api_key_env="CRS_TEST_UNSET_KEY",
                         concurrency=2, timeout_s=120, backoff_s=0.01, **overrides)


# --------------------------------------------------------------------------------- the seeker
def test_the_seeker_sees_the_dialogue_with_roles_swapped():
    grown = Sample("x", "x", 3, ("I want horror.", "Hi!", "What kind?", "Ghosts.", "I recommend Heat (1995)."),
                   (SEEKER, RECOMMENDER, RECOMMENDER, SEEKER, RECOMMENDER), ())
    assert seeker_view(grown) == [{"role": "assistant", "content": "I want horror."},
                                  {"role": "user", "content": "Hi!\nWhat kind?"},
                                  {"role": "assistant", "content": "Ghosts."},
                                  {"role": "user", "content": "I recommend Heat (1995)."}]


def test_seeker_text_keeps_only_the_users_message():
    assert seeker_text("User: I want a scary one.\nSystem: How about Saw?") == "I want a scary one."
    assert seeker_text("  Something   with\nghosts ") == "Something with ghosts"
    with pytest.raises(ValueError):
        seeker_text("System: I recommend Heat.")


def seeker_on(server_url: str, prompt: str = "seeker_v1", leak_retries: int = 2, **overrides) -> Seeker:
    endpoint = ChatEndpoint(endpoint_settings(server_url, max_retries=1, **overrides))
    return Seeker(endpoint, load_chat_prompt(prompt, SEEKER_PLACEHOLDERS, ends_with_user=False), CATALOG, leak_retries)


def test_a_leaking_turn_is_regenerated():
    with ScriptedServer(["I loved Insidious (2010)!", "A horror movie about a haunted family."]) as server:
        turn = seeker_on(server.base_url).reply(S1, [2])
    assert server.requests == 2
    assert (turn.text, turn.leaked, turn.regenerations, turn.masked) == (
        "A horror movie about a haunted family.", True, 1, False)


def test_a_turn_that_keeps_leaking_is_masked_and_counted():
    with ScriptedServer(["I loved Insidious!", "insidious please", "Like INSIDIOUS but newer."]) as server:
        turn = seeker_on(server.base_url).reply(S1, [2])
    assert server.requests == 3  # the first answer + leak_retries regenerations
    assert (turn.text, turn.leaked, turn.regenerations, turn.masked) == ("Like [that movie] but newer.", True, 2, True)


# ---------------------------------------------------------------------------------- the turn loop
class ScriptedRanker:
    """Puts each dialogue's target at a scripted position per seeker turn; records what it was shown."""

    name = "scripted"
    # sample id -> position of the target (0-based, None = not ranked) after 0, 1, 2 seeker turns
    POSITIONS: ClassVar = {"d1#2": [11, 0, 0], "d2#2": [None, 30, None]}
    TARGET: ClassVar = {"d1#2": 2, "d2#2": 3}

    def __init__(self):
        self.seen: list[Sample] = []

    def rank(self, samples):
        rankings = []
        for sample in samples:
            self.seen.append(sample)
            turn = sum(role == SEEKER for role in sample.context_roles) - 1
            position = self.POSITIONS[sample.sample_id][turn]
            ranking = [f.item_id for f in FILLERS]
            if position is not None:
                ranking.insert(position, self.TARGET[sample.sample_id])
            rankings.append(ranking)
        return rankings


def test_turn_loop_counts_cumulative_recall_and_stops_at_a_top1_hit():
    ranker = ScriptedRanker()
    with ScriptedServer(["Scarier, with a possessed child."]) as server:
        result = simulate(ranker, seeker_on(server.base_url), [S1, S2], CATALOG, turns=2)
    # d1 is asked once (its target is top-1 after turn 1), d2 twice
    assert server.requests == 3 and result["seeker"]["turns"] == 3 and result["stopped_early"] == {1: 1}
    recall = {(row["turn"], v): [row[v]["n"], *(row[v][f"recall@{k}"] for k in (1, 10, 50))]
              for row in result["per_turn"] for v in ("removed", "not_removed")}
    # removed: d1's Insidious + d2's Heat (The Conjuring was mentioned); not_removed counts The Conjuring too
    assert recall[(0, "removed")] == [2, 0.0, 0.0, 0.5]
    assert recall[(1, "removed")] == [2, 0.5, 0.5, 1.0]
    assert recall[(2, "removed")] == [2, 0.5, 0.5, 1.0]  # d2's hit at turn 1 still counts at turn 2
    assert recall[(2, "not_removed")] == [3, 1 / 3, 1 / 3, 2 / 3]
    assert [row["ranked"] for row in result["per_turn"]] == [2, 2, 1]
    # the recommender saw its own top 3 and the seeker's reply, appended with speaker roles
    d1_turn1 = next(s for s in ranker.seen if s.sample_id == "d1#2" and len(s.context) == 4)
    said = ("I recommend Filler Picture Number 0 (2000), Filler Picture Number 1 (2000) and "
            "Filler Picture Number 2 (2000).")
    assert d1_turn1.context[2:] == (said, "Scarier, with a possessed child.")
    assert d1_turn1.context_roles[2:] == (RECOMMENDER, SEEKER)
    table = format_turn_table({"scripted": result})
    assert "scripted  removed          2  2  50.00  50.00  100.00" in table.splitlines()


def test_the_recommender_never_sees_a_leaking_turn():
    ranker = ScriptedRanker()
    with ScriptedServer(["It has to be Insidious.", "Insidious!", "insidious (2010)"]) as server:
        result = simulate(ranker, seeker_on(server.base_url), [S1], CATALOG, turns=1)
    guard = TitleGuard("Insidious (2010)")
    assert all(not guard.leaks(text) for sample in ranker.seen for text in sample.context)
    assert result["seeker"] | {"usage": None} == {"turns": 1, "failed": 0, "leaked": 1, "regenerations": 2,
                                                   "fixed_by_regeneration": 0, "masked": 1, "usage": None}


def test_choose_samples_is_seeded_and_skips_samples_without_a_new_target():
    repeat = Sample("d3#2", "d3", 2, ("hi",), (SEEKER,), context_items=(3,), targets=(3,))
    chosen = choose_samples([S1, S2, repeat], 5, seed=1)
    assert sorted(s.sample_id for s in chosen) == ["d1#2", "d2#2"] and chosen == choose_samples([S1, S2, repeat], 5, 1)


def test_prompt_files_fail_early():
    assert load_chat_prompt("zero_shot_v1", PROMPT_PLACEHOLDERS).version.startswith("zero_shot_v1-")
    assert load_chat_prompt("seeker_v1", SEEKER_PLACEHOLDERS, ends_with_user=False).retry
    with pytest.raises(ConfigError, match="lacks"):
        parse_chat_prompt("[user]\n$context only\n", "bad", ("context", "count"))
    with pytest.raises(ConfigError, match="last chat section"):
        parse_chat_prompt("[user]\n$context $count\n[assistant]\n1. Heat\n", "bad", ("context", "count"))


# ------------------------------------------------------------------------------ zero-shot recommender
LIST_ANSWER = "Here are my picks:\n1. Insidious (2010)\n2. **Heat** (1995) - a heist\n3. Unknown Film (1999)\n4. It"


def test_zero_shot_rankings_go_through_the_protocol_and_are_cached(tmp_path):
    cache = AnswerCache(tmp_path / "answers.sqlite")
    prompt = load_chat_prompt("zero_shot_v1", PROMPT_PLACEHOLDERS)
    with ScriptedServer([LIST_ANSWER]) as server:
        recommender = ZeroShotRecommender(ChatEndpoint(endpoint_settings(server.base_url), cache), CATALOG, prompt)
        rankings = recommender.rank([S1, S2])
        again = ZeroShotRecommender(ChatEndpoint(endpoint_settings(server.base_url), cache), CATALOG, prompt)
        assert again.rank([S1, S2]) == rankings and server.requests == 2 and again.usage.cached == 2
        shorter = ZeroShotRecommender(ChatEndpoint(endpoint_settings(server.base_url, max_tokens=7), cache), CATALOG,
                                      prompt)
        assert shorter.rank([S2]) == [[2, 3, 4]] and server.requests == 3  # another token budget: asked again
    assert rankings == [[2, 3, 4], [2, 3, 4]]
    result = evaluate_rankings(rankings, [S1, S2], ks=(1, 5))
    # removed: d1's Insidious at rank 1, d2's Heat at rank 2; not_removed adds d1's unranked Conjuring
    spread = {f"{m}@{k}": 0 for m in ("coverage", "entropy") for k in (1, 5)}  # not what this test is about
    assert result["removed"] | spread == pytest.approx(
        {"n": 2, "recall@1": 0.5, "recall@5": 1.0, "ndcg@1": 0.5, "ndcg@5": (1 + 1 / 1.5849625) / 2,
         "mrr@1": 0.5, "mrr@5": 0.75, **spread})
    assert result["not_removed"]["n"] == 3 and result["not_removed"]["recall@5"] == pytest.approx(2 / 3)
    summary = recommender.summary()
    assert (summary["titles"], summary["mapped"], summary["mapped_by"]) == (8, 6, {"exact": 4, "title": 2, "fuzzy": 0})
    assert summary["mapped_share"] == 0.75 and summary["unmapped_examples"] == ["Unknown Film (1999)"]


def test_zero_shot_answer_without_titles_is_reasked_then_failed_not_cached(tmp_path):
    cache = AnswerCache(tmp_path / "answers.sqlite")
    prompt = load_chat_prompt("zero_shot_v1", PROMPT_PLACEHOLDERS)
    with ScriptedServer(["I cannot recommend movies."]) as server:
        endpoint = ChatEndpoint(endpoint_settings(server.base_url, max_retries=1), cache)
        recommender = ZeroShotRecommender(endpoint, CATALOG, prompt)
        assert recommender.rank([S2]) == [[]] and server.requests == 2
        assert recommender.summary()["failed"] == 1 and "no movie titles" in recommender.summary()["errors"][0]
    assert len(cache) == 0


# ------------------------------------------------------------------------------------ `crs simulate`
def test_crs_simulate_entry_zero_shot_row_and_simulate_json(tmp_path, capsys):
    data = make_inspired(tmp_path / "data")
    common = ["--dataset", "inspired", "--data-dir", str(data), "--runs-dir", str(tmp_path / "runs")]
    assert crs(["baselines", *common]) == 0
    run_dir = tmp_path / "runs" / "inspired" / "default"
    with ScriptedServer(["1. Heat (1995)\n2. Alien (1979)\n3. Up"]) as server:  # the endpoint from the config
        code = crs_simulate([*common, "--zero-shot", "--set", f"zero_shot.base_url={server.base_url}",
                             "--set", "zero_shot.model=m"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "zero-shot  removed" in out and "mapped to the catalog 6 = 100.0%" in out
    metrics = json.loads((run_dir / "metrics.json").read_text())["test"]
    assert "zero-shot LLM m" in metrics["zero-shot"]["source"] and {"popularity", "ease"}.isdisjoint(metrics)
    prepared = load_prepared(run_dir)
    test = [s for s in prepared.samples["test"] if s.targets]
    reread = read_predictions(run_dir / "zero_shot" / "test_predictions.jsonl", test, prepared.catalog)
    assert evaluate_rankings(reread, test) == {k: v for k, v in metrics["zero-shot"].items() if k != "source"}

    with ScriptedServer(["Something tense with a shootout."]) as server:  # flags over the simulate: section
        code = crs_simulate([*common, "--models", "popularity,ease", "--set", "simulate.turns=4", "--set",
                             "simulate.dialogues=5", "--turns", "2", "--base-url", server.base_url, "--llm-model", "m"])
    out, err = capsys.readouterr()
    assert code == 0, err
    report = json.loads((run_dir / "simulate.json").read_text())
    assert report["settings"] | {"base_url": None} == {
        "enabled": False, "base_url": None, "model": "m", "api_key_env": None, "concurrency": 4, "temperature": 0.0,
        "prompt": "seeker_v1", "turns": 2, "dialogues": 5, "max_tokens": 96, "leak_retries": 2}
    assert set(report["models"]) == {"popularity", "ease"} and len(report["samples"]) == 1
    assert [row["turn"] for row in report["models"]["ease"]["per_turn"]] == [0, 1, 2]
    assert "measures the harness" in out and "popularity  removed" in out
    code = crs_simulate([*common, "--models", "minilm", "--base-url", server.base_url])
    assert code == 2 and "no saved model minilm" in capsys.readouterr().err
    code = crs_simulate([*common, "--turns", "-1", "--base-url", server.base_url])
    assert code == 2 and "command line: simulate.turns: -1 must be >= 0" in capsys.readouterr().err


# ------------------------------------------------------------------------------- against a real server
FEW_SHOT_ZERO_SHOT = """# test prompt: a worked example teaches SmolLM2 the list format
[system]
You recommend movies. Reply with a numbered list of movie titles with years.
[user]
Conversation:
User: I want a heist movie.

List $count movies.
[assistant]
1. Heat (1995)
2. The Hunger Games (2012)
[user]
Conversation:
$context

List $count movies.
"""
@pytest.fixture(scope="module")
def llm_server():
    from crs_core.llm_assets import smollm2_path

    with LocalLLMServer(smollm2_path()) as server:
        yield server


def test_simulator_end_to_end_on_the_real_server(llm_server, tmp_path):
    cache = AnswerCache(tmp_path / "answers.sqlite")
    config = endpoint_settings(llm_server.base_url, llm_server.model, max_tokens=24, max_retries=1)
    ranker = SavedModelRanker("popularity", Popularity().fit(TRAIN, CATALOG), CATALOG, top_n=100)
    before = llm_server.chat_requests()
    seeker = Seeker(ChatEndpoint(config, cache), load_chat_prompt("seeker_v1", SEEKER_PLACEHOLDERS, False), CATALOG)
    result = simulate(ranker, seeker, [S1, S2], CATALOG, turns=2)
    requests = result["seeker"]["usage"]["requests"]
    assert llm_server.wait_for_log(before + requests) == before + requests >= before + 4
    assert result["seeker"]["turns"] == 4 and result["seeker"]["failed"] == 0  # no target is ever popularity's top 1
    for row in result["per_turn"]:
        assert row["removed"]["n"] == 2 and row["not_removed"]["n"] == 3
    for transcript in result["transcripts"]:
        guard = TitleGuard(CATALOG.get(transcript["targets"][0]).title)
        assert [t["turn"] for t in transcript["turns"]] == [0, 1, 2]
        assert all(t["user"] and not guard.leaks(t["user"]) for t in transcript["turns"][:2])
    rerun = simulate(ranker, seeker, [S1, S2], CATALOG, turns=2)
    assert rerun["per_turn"] == result["per_turn"] and rerun["seeker"]["usage"]["requests"] == 0
    assert llm_server.wait_for_log(before + requests + 1, timeout_s=1.0) == before + requests


def test_zero_shot_end_to_end_on_the_real_server(llm_server, tmp_path):
    prompt = tmp_path / "zero_shot_fewshot.txt"
    prompt.write_text(FEW_SHOT_ZERO_SHOT)
    config = endpoint_settings(llm_server.base_url, llm_server.model, max_tokens=32, max_retries=1)
    before = llm_server.chat_requests()
    recommender = ZeroShotRecommender(ChatEndpoint(config), CATALOG, load_chat_prompt(str(prompt),
                                                                                     PROMPT_PLACEHOLDERS))
    rankings = recommender.rank([S1, S2])
    summary = recommender.summary()
    assert llm_server.wait_for_log(before + summary["usage"]["requests"]) == before + summary["usage"]["requests"]
    assert summary["answers"] == 2 and summary["titles"] >= 1 and 0.0 <= summary["mapped_share"] <= 1.0
    assert all(item in CATALOG for ranking in rankings for item in ranking)
    result = evaluate_rankings(rankings, [S1, S2])
    assert result["removed"]["n"] == 2 and result["not_removed"]["n"] == 3
    assert 0.0 <= result["removed"]["recall@50"] <= 1.0
