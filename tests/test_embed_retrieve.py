"""Stages `embed` and `retrieve`: the encoder, Ray Data vs in-process equality, faiss vs brute force,
candidate recall by hand, dense and hybrid retrieval and stage skipping, on a tiny hand-made run directory."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from crs_core.artifacts import RunDir, read_table, write_table
from crs_core.config import ActorPoolConfig, Config, EncoderConfig
from crs_core.encoders import (
    DOCUMENT,
    QUERY,
    build_encoder,
    gritlm_prefix,
    mean_pool,
    prefix_lengths,
)
from crs_core.errors import ConfigError
from crs_core.schema import (
    CANDIDATES_SCHEMA,
    EMBEDDINGS_SCHEMA,
    ITEM_SETS_SCHEMA,
    ITEMS_SCHEMA,
    SAMPLES_SCHEMA,
    Item,
    Sample,
    embeddings_table,
    items_to_table,
    read_embeddings,
    samples_to_table,
)
from crs_core.stages.embed import (
    STAGE as EMBED,
    TEXTS_SCHEMA,
    embed_in_process,
    embed_with_ray,
    query_text,
)
from crs_core.stages.retrieve import (
    STAGE as RETRIEVE,
    candidate_recall,
    candidates_table,
    top_k_inner_product,
)
from crs_core.text import render_context

POOL = ActorPoolConfig(actors=2, num_cpus=0.5, batch_size=4)  # 2 x 0.5 CPU leaves a CPU for the read step

GENRES = ["space adventure with astronauts", "romantic comedy in Paris", "haunted house horror",
          "courtroom legal drama", "animated talking animals", "heist thriller with a bank robbery",
          "high school musical", "zombie apocalypse survival", "world war two battle",
          "superhero saving the city", "detective solving a murder", "cooking competition documentary"]
ITEMS = [Item(100 + i, f"Movie {i}", f"Movie {i} (2001) Genres: {g}. Plot: a film about {g}.")
         for i, g in enumerate(GENRES)]


def _sample(sid: str, wants: str, target: int, context_items: tuple[int, ...] = ()) -> Sample:
    return Sample(sid, sid.split("#")[0], 2, ("Hi, what do you like?", f"I really want a {wants} movie."),
                  ("recommender", "seeker"), context_items, targets=(target,))


SAMPLES = {
    "train": [_sample("d1#2", "space adventure", 100), _sample("d2#2", "haunted horror", 102),
              _sample("d3#2", "bank heist", 105), _sample("d4#2", "zombie", 107)],
    "valid": [_sample("d5#2", "courtroom", 103), _sample("d6#2", "murder mystery detective", 110, (110,))],
    "test": [_sample("d7#2", "romantic comedy", 101), _sample("d8#2", "superhero", 109)],
}


def write_tiny_run(root: Path) -> RunDir:
    """What `prepare` writes, for the tiny catalog and samples above."""
    run = RunDir(root)
    write_table(run.path("items.parquet"), items_to_table(ITEMS), ITEMS_SCHEMA)
    for split, samples in SAMPLES.items():
        write_table(run.path("samples", f"{split}.parquet"), samples_to_table(samples), SAMPLES_SCHEMA)
    write_table(run.path("item_sets.parquet"), pa.Table.from_pylist([], schema=ITEM_SETS_SCHEMA), ITEM_SETS_SCHEMA)
    return run


def tiny_config(root: Path, **retrieval) -> Config:
    config = Config(runs_dir=str(root))
    config.encoder = EncoderConfig(max_length=64, pool=dataclasses.replace(POOL))
    config.retrieval = dataclasses.replace(config.retrieval, **retrieval)
    return config


@pytest.fixture(scope="module")
def minilm():
    return build_encoder(EncoderConfig(max_length=64))


# --- encoders ---------------------------------------------------------------------------------------

def test_minilm_unit_rows_and_paraphrase_closer(minilm) -> None:
    texts = ["A man is eating food.", "A man eats a meal.", "The stock market crashed today."]
    vectors = minilm.encode(texts, DOCUMENT)
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32 and minilm.dim == 384
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.3


def test_truncation_keeps_newest_query_turns_and_document_start(minilm) -> None:
    long_text = "start " + "middle " * 200 + "end"
    queries, _ = minilm.tokenize([long_text], QUERY)
    documents, _ = minilm.tokenize([long_text], DOCUMENT)
    assert queries["input_ids"].shape[1] == documents["input_ids"].shape[1] == 64
    assert minilm.tokenizer.decode(queries["input_ids"][0], skip_special_tokens=True).split()[-1] == "end"
    assert minilm.tokenizer.decode(documents["input_ids"][0], skip_special_tokens=True).split()[0] == "start"


def test_gritlm_prefix_is_the_readme_template() -> None:
    assert gritlm_prefix(QUERY, "Find movies") == "<|user|>\nFind movies\n<|embed|>\n"
    assert gritlm_prefix(QUERY, "") == "<|embed|>\n"
    assert gritlm_prefix(DOCUMENT, "Find movies") == "<|embed|>\n"
    with pytest.raises(ValueError):
        gritlm_prefix("passage", "x")


def test_prefix_lengths_count_leading_special_but_not_trailing() -> None:
    # Instruction alone: [BOS=1, 7, 8] (Mistral style) and [CLS=101, 7, 8, SEP=102] (BERT style).
    ids = torch.tensor([[1, 7, 8, 20, 21, 0], [1, 7, 8, 30, 0, 0]])
    assert prefix_lengths(ids, [1, 7, 8]).tolist() == [3, 3]
    bert_ids = torch.tensor([[101, 7, 8, 20, 102, 0]])
    assert prefix_lengths(bert_ids, [101, 7, 8, 102]).tolist() == [3]


def test_mean_pool_over_text_tokens_only() -> None:
    hidden = torch.tensor([[[1.0, 0.0], [2.0, 2.0], [4.0, 6.0], [8.0, 8.0]],
                           [[5.0, 5.0], [1.0, 3.0], [3.0, 1.0], [9.0, 9.0]]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])  # row 2: last token is padding
    np.testing.assert_allclose(mean_pool(hidden, mask), [[3.75, 4.0], [3.0, 3.0]])
    # Skip 2 instruction tokens in row 1 and 1 in row 2: means of rows 1[2:4] and 2[1:3].
    np.testing.assert_allclose(mean_pool(hidden, mask, torch.tensor([2, 1])), [[6.0, 7.0], [2.0, 2.0]])
    # Nothing left to pool: zeros, not NaN.
    np.testing.assert_allclose(mean_pool(hidden, mask, torch.tensor([4, 4])), np.zeros((2, 2)))


def test_gritlm_format_on_a_real_tokenizer_keeps_instruction_under_left_truncation() -> None:
    encoder = build_encoder(EncoderConfig(instruction_format="gritlm", query_instruction="Find movies", max_length=32))
    tokenizer = encoder.tokenizer
    batch, skip = encoder.tokenize(["first " + "word " * 100 + "newest", "short"], QUERY)
    texts = [tokenizer.decode(ids, skip_special_tokens=True) for ids in batch["input_ids"]]
    assert texts[0].startswith("< | user | > find movies") and texts[0].endswith("newest")
    assert batch["input_ids"].shape[1] == 32
    # Instruction tokens = [CLS] + the prefix's own tokens; the lone prefix's trailing [SEP] is not counted.
    n_prefix = len(tokenizer(gritlm_prefix(QUERY, "Find movies"))["input_ids"]) - 1
    assert skip.tolist() == [n_prefix, n_prefix]
    assert tokenizer.decode(batch["input_ids"][1][n_prefix:], skip_special_tokens=True) == "short"
    vectors = encoder.encode(["I want a space movie", "short"], QUERY)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    with pytest.raises(ConfigError, match="max_length"):
        build_encoder(EncoderConfig(instruction_format="gritlm", max_length=8)).encode(["x"], QUERY)


def test_build_encoder_hf_needs_a_model() -> None:
    with pytest.raises(ConfigError, match="encoder.model"):
        build_encoder(EncoderConfig(kind="hf"))


# --- embedding on Ray Data -------------------------------------------------------------------------

def test_ray_actors_match_in_process_row_for_row(ray_local, minilm) -> None:
    docs = [item.description for item in ITEMS]
    queries = [f"User: I want a {g} film" for g in GENRES[:7]]
    rows = ([("items", str(i), DOCUMENT, t) for i, t in enumerate(docs)]
            + [("q", f"s{i}", QUERY, t) for i, t in enumerate(queries)])
    table = pa.Table.from_pylist([{"row": i, "group": g, "key": k, "kind": kind, "text": t}
                                  for i, (g, k, kind, t) in enumerate(rows)], schema=TEXTS_SCHEMA)
    on_ray = embed_with_ray(table, EncoderConfig(max_length=64), POOL)
    expected = np.concatenate([embed_in_process(minilm, docs, DOCUMENT, batch_size=5),
                               embed_in_process(minilm, queries, QUERY, batch_size=5)])
    assert on_ray.shape == (len(rows), 384)
    np.testing.assert_allclose(on_ray, expected, atol=1e-5)


def test_embeddings_artifact_round_trip(tmp_path) -> None:
    matrix = np.arange(12, dtype=np.float32).reshape(3, 4)
    write_table(tmp_path / "e.parquet", embeddings_table(["a", "b", "c"], matrix), EMBEDDINGS_SCHEMA)
    keys, back = read_embeddings(tmp_path / "e.parquet")
    assert keys == ["a", "b", "c"]
    np.testing.assert_array_equal(back, matrix)


# --- retrieval -------------------------------------------------------------------------------------

def test_faiss_top_k_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    items = rng.normal(size=(40, 8)).astype(np.float32)
    queries = rng.normal(size=(6, 8)).astype(np.float32)
    scores, indices = top_k_inner_product(queries, items, k=7)
    full = queries @ items.T  # continuous random values: no ties
    expected = np.argsort(-full, axis=1)[:, :7]
    np.testing.assert_array_equal(indices, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(full, expected, axis=1), rtol=1e-5)
    capped_scores, capped = top_k_inner_product(queries, items[:3], k=50)
    assert capped.shape == (6, 3) and set(capped[0]) == {0, 1, 2}


def test_use_gpu_without_faiss_gpu_is_a_clear_error() -> None:
    import faiss

    if hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:
        pytest.skip("faiss has a GPU here")
    with pytest.raises(ConfigError, match="use_gpu"):
        top_k_inner_product(np.ones((1, 2), np.float32), np.ones((2, 2), np.float32), 1, use_gpu=True)


def test_candidate_recall_by_hand() -> None:
    # s1: targets 1 (found) and 2 (missed, but already in context); s2: target 3 (found); s3: no candidates.
    samples = [Sample("s1", "d", 1, (), (), (2,), targets=(1, 2)), Sample("s2", "d", 1, (), (), (), targets=(3,)),
               Sample("s3", "d", 1, (), (), (), targets=(4,))]
    table = candidates_table(["s1", "s2"], np.array([1, 3, 5]), np.array([[0.9, 0.5], [0.8, 0.1]]),
                             np.array([[0, 2], [1, 0]]))
    assert table.column("item_id").to_pylist() == [1, 5, 3, 1]
    assert table.column("rank").to_pylist() == [0, 1, 0, 1]
    # All pairs: hits 1 and 3 out of (1, 2, 3, 4) = 2/4; new pairs (2 is in context): 1, 3 of (1, 3, 4) = 2/3.
    assert candidate_recall(table, samples) == {"recall": 0.5, "n": 4, "recall_new": pytest.approx(2 / 3), "n_new": 3}
    assert candidate_recall(table, [])["recall"] is None


# --- the stages --------------------------------------------------------------------------------------

def test_stages_write_artifacts_skip_when_current_and_rerun_on_change(ray_local, tmp_path, minilm) -> None:
    config = tiny_config(tmp_path, top_k=3, method="dense", exclude_mentioned=False)
    run = write_tiny_run(config.run_dir())

    first = EMBED.run(config, run)
    assert not first.reused and first["counts"] == {"items": 12, "train": 4, "valid": 2, "test": 2}
    keys, items = read_embeddings(run.path("embeddings", "items.parquet"))
    assert keys == [str(item.item_id) for item in ITEMS]
    np.testing.assert_allclose(items, embed_in_process(minilm, [i.description for i in ITEMS], DOCUMENT), atol=1e-5)
    assert read_embeddings(run.path("embeddings", "valid.parquet"))[0] == ["d5#2", "d6#2"]
    assert EMBED.run(config, run).reused

    retrieved = RETRIEVE.run(config, run)
    assert not retrieved.reused and retrieved["top_k"] == 3
    test = read_table(run.path("candidates", "test.parquet"), CANDIDATES_SCHEMA)
    assert test.num_rows == 2 * 3 and test.column("rank").to_pylist() == [0, 1, 2, 0, 1, 2]
    similarity = np.array(test.column("similarity").to_pylist()).reshape(2, 3)
    assert (np.diff(similarity, axis=1) <= 0).all()
    # Each context names its genre, so MiniLM should find most targets within the top 3.
    assert retrieved["splits"]["train"]["recall"] >= 0.75
    assert retrieved["splits"]["valid"]["n"] == 2 and retrieved["splits"]["valid"]["n_new"] == 1
    assert RETRIEVE.run(config, run).reused

    bigger_k = tiny_config(tmp_path, top_k=50, method="dense", exclude_mentioned=False)  # capped at 12 items
    rerun = RETRIEVE.run(bigger_k, run)
    assert not rerun.reused and rerun["top_k"] == 12
    assert all(s["recall"] == 1.0 for s in rerun["splits"].values())

    hybrid = tiny_config(tmp_path, top_k=50)  # the default: hybrid, films mentioned before excluded
    rerun = RETRIEVE.run(hybrid, run)
    assert not rerun.reused and rerun["method"] == "hybrid"
    valid = read_table(run.path("candidates", "valid.parquet"), CANDIDATES_SCHEMA).to_pylist()
    assert [r["item_id"] for r in valid if r["sample_id"] == "d6#2"].count(110) == 0  # d6 mentioned 110
    assert len(valid) == 12 + 11
    # d5's target is found; d6's target 110 was mentioned before, so it is excluded: 1/2 of all, 1/1 new.
    assert rerun["splits"]["valid"]["recall"] == 0.5 and rerun["splits"]["valid"]["recall_new"] == 1.0
    assert rerun["splits"]["train"]["recall"] == 1.0

    bigger_k.encoder.max_length = 16  # truncates the descriptions, so the vectors change
    assert not EMBED.run(bigger_k, run).reused
    assert not RETRIEVE.run(bigger_k, run).reused  # its input embeddings changed


def test_seeker_query_keeps_the_newest_seeker_turns_only() -> None:
    sample = Sample("s", "d", 5, ("Hi!", "What do you like?", "Horror, but no gore", "How about Us?", "Seen it",
                                  "Something new then?", "Yes, from this year"),
                    ("seeker", "recommender", "seeker", "recommender", "seeker", "recommender", "seeker"), ())
    assert query_text(sample, 2) == "User: Seen it\nUser: Yes, from this year"
    assert query_text(sample, 10) == "User: Hi!\nUser: Horror, but no gore\nUser: Seen it\nUser: Yes, from this year"
    assert query_text(sample, None) == render_context(sample)
    opening = Sample("o", "d", 1, ("Hello, I am your movie helper",), ("recommender",), ())
    assert query_text(opening, 3) == "System: Hello, I am your movie helper"  # no seeker turn yet: the dialogue
