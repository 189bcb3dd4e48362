"""A synthetic-but-realistic CRS world for benchmarks/scale.py, written as a prepared run directory.

What makes it realistic enough for a cost curve: a ReDial-sized catalog (6,576 items by default) with titles,
years, genres, directors, stars and plots in the vocabulary the feature student reads; dialogues of 2-6 turns in
which the seeker names genres, cites movies by title, names actors, rules a genre out or asks for something new;
item vectors clustered by genre, so the top-50 candidates of a context share its genres as a retriever's do; and a
teacher that rates 2,000 pairs of 200 contexts 0-4 from genre fit, people and dislikes, with noise.

Everything is seeded per context, so the first N contexts of every size are the same contexts: the teacher's
judgments (always the first 200 train contexts), the valid and the test split are identical at every size, and
only the number of train contexts (pairs = contexts x 50) grows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from crs_core.artifacts import RunDir, write_table
from crs_core.schema import (
    CANDIDATES_SCHEMA,
    EMBEDDINGS_SCHEMA,
    ITEM_SETS_SCHEMA,
    ITEMS_SCHEMA,
    RECOMMENDER,
    SAMPLES_SCHEMA,
    SEEKER,
    SPLITS,
    TEACHER_SCHEMA,
    Item,
    Sample,
    embeddings_table,
    items_to_table,
    samples_to_table,
)
from crs_core.stages.retrieve import top_k_rows

GENRES = {  # genre -> the words a plot or a seeker uses for it (each matches the feature student's topic rules)
    "action": "action-packed", "adventure": "adventure", "animation": "animated", "biography": "true story",
    "comedy": "funny", "crime": "gangster", "documentary": "documentary", "drama": "drama", "family": "family",
    "fantasy": "magic", "history": "period piece", "horror": "scary", "music": "music", "musical": "musical",
    "mystery": "detective", "romance": "romantic", "sci-fi": "space", "sport": "sports", "thriller": "suspense",
    "war": "military", "western": "cowboy", "superhero": "superhero",
}
TITLE_WORDS = ("night", "river", "shadow", "city", "heart", "storm", "dream", "road", "king", "fire", "glass",
               "winter", "ghost", "island", "secret", "star", "stone", "wolf", "garden", "silver", "last", "hidden",
               "broken", "golden", "lost", "wild", "dark", "summer", "iron", "paper", "blue", "crimson")
FIRST = ("anna", "ben", "carla", "david", "emma", "frank", "grace", "henry", "iris", "jack", "kate", "leo", "maya",
         "nora", "oscar", "paula", "quinn", "rosa", "sam", "tina", "victor", "wendy", "yara", "zane")
LAST = ("abbott", "baxter", "carver", "dalton", "ellison", "fletcher", "garland", "harlow", "ingram", "jensen",
        "keller", "lawson", "mercer", "norwood", "oakley", "prescott", "quincy", "redford", "sutton", "thornton",
        "underwood", "vance", "whitman", "yardley")
CANDIDATES_PER_CONTEXT = 50
TEACHER_CONTEXTS, TEACHER_PAIRS_PER_CONTEXT = 200, 10
VALID_CONTEXTS, TEST_CONTEXTS = 200, 500
DIM = 384  # MiniLM's width: the feature student's item vectors have the embed stage's shape
GENRE_LIST = list(GENRES)


def _person(rng: np.random.Generator) -> str:
    return f"{rng.choice(FIRST).title()} {rng.choice(LAST).title()}"


def make_catalog(n_items: int, seed: int) -> tuple[list[Item], np.ndarray]:
    """(items, (n_items, DIM) unit vectors): an item's vector is its genres' centroid plus noise."""
    rng = np.random.default_rng([seed, 0])
    centroids = rng.standard_normal((len(GENRES), DIM)).astype(np.float32)
    items, vectors = [], np.zeros((n_items, DIM), dtype=np.float32)
    for n in range(n_items):
        genres = [GENRE_LIST[g] for g in rng.choice(len(GENRES), size=rng.integers(1, 4), replace=False)]
        words = " ".join(str(w).title() for w in rng.choice(TITLE_WORDS, size=2))
        title = f"The {words} {n} ({rng.integers(1950, 2021)})"
        directors, stars = [_person(rng)], [_person(rng) for _ in range(rng.integers(1, 4))]
        things = " and a ".join(str(w) for w in rng.choice(TITLE_WORDS, size=2))
        plot = f"A {' and '.join(GENRES[g] for g in genres)} film about a {things}."
        description = (f"{title}. Genres: {', '.join(genres)}. Directed by {directors[0]}. "
                       f"Starring {', '.join(stars)}. {plot}")
        items.append(Item(100_000 + n, title, description, tuple(genres), tuple(directors), tuple(stars), plot))
        vector = centroids[[GENRE_LIST.index(g) for g in genres]].sum(0) + 0.8 * rng.standard_normal(DIM)
        vectors[n] = vector / np.linalg.norm(vector)
    return items, vectors


def make_sample(split: str, n: int, items: list[Item], by_genre: dict[str, list[int]],
                seed: int) -> tuple[Sample, dict]:
    """One dialogue context and its hidden preferences ({liked, disliked, star}) the teacher judges by."""
    rng = np.random.default_rng([seed, 1, SPLITS.index(split), n])
    liked = [GENRE_LIST[g] for g in rng.choice(len(GENRES), size=rng.integers(1, 3), replace=False)]
    disliked = rng.choice([g for g in GENRE_LIST if g not in liked]) if rng.random() < 0.3 else None
    pool = sorted({k for g in liked for k in by_genre[g]})
    picks = [int(k) for k in rng.choice(pool, size=min(len(pool), 4), replace=False)]
    cited, target = picks[: rng.integers(0, 3)], picks[-1]
    star = items[cited[0]].stars[0] if cited and rng.random() < 0.5 else None
    turns = [(RECOMMENDER, "Hi! What kind of movies are you in the mood for?"),
             (SEEKER, f"I love {' and '.join(GENRES[g] for g in liked)} movies"
                      + (f", especially {items[cited[0]].title}." if cited else "."))]
    if len(cited) > 1:
        turns += [(RECOMMENDER, f"Have you seen {items[cited[1]].title}?"), (SEEKER, "Yes, I liked that one a lot.")]
    extra = []
    if disliked:
        extra.append(f"But please no {GENRES[disliked]} stuff, I don't like {disliked}.")
    if star:
        extra.append(f"Anything with {star} would be great.")
    if rng.random() < 0.2:
        extra.append("Something new, from the last few years.")
    if extra:
        turns += [(RECOMMENDER, "Got it. Anything else I should know?"), (SEEKER, " ".join(extra))]
    sample = Sample(f"{split}-{n:07d}", f"{split}-d{n:07d}", len(turns), tuple(t for _, t in turns),
                    tuple(r for r, _ in turns), tuple(items[k].item_id for k in cited), (),
                    (items[target].item_id,))
    return sample, {"liked": set(liked), "disliked": disliked, "star": star, "target": target, "rng": rng}


def context_vectors(hidden: list[dict], genre_mean: dict[str, np.ndarray], seed: int) -> np.ndarray:
    """What a retriever would embed a context as: the mean direction of its liked genres' items, plus noise."""
    rng = np.random.default_rng([seed, 2])
    rows = np.stack([sum(genre_mean[g] for g in h["liked"]) + 0.3 * rng.standard_normal(DIM) for h in hidden])
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def teacher_score(item: Item, hidden: dict, is_gold: bool, rng: np.random.Generator) -> float:
    """The judge's 0-4: genre fit with the liked genres, an actor asked for, a genre ruled out, and noise."""
    if is_gold:
        return 4.0
    fit = len(hidden["liked"] & set(item.genres)) / len(item.genres)
    value = 3.0 * fit + (1.0 if hidden["star"] in item.stars else 0.0)
    value -= 2.0 if hidden["disliked"] in item.genres else 0.0
    return float(np.clip(np.rint(value + rng.normal(0.0, 0.6)), 0, 4))


def write_world(root: Path, train_contexts: int, n_items: int, seed: int = 0) -> RunDir:
    """The prepared run at `root`: items, samples (train/valid/test), item embeddings, the train contexts' top-50
    candidates and 2,000 teacher judgments."""
    run = RunDir(root)
    items, item_vectors = make_catalog(n_items, seed)
    by_genre = {g: [k for k, it in enumerate(items) if g in it.genres] for g in GENRES}
    write_table(run.path("items.parquet"), items_to_table(items), ITEMS_SCHEMA)
    write_table(run.path("item_sets.parquet"), ITEM_SETS_SCHEMA.empty_table(), ITEM_SETS_SCHEMA)
    write_table(run.path("embeddings", "items.parquet"),
                embeddings_table([str(it.item_id) for it in items], item_vectors), EMBEDDINGS_SCHEMA)
    for split, count in (("valid", VALID_CONTEXTS), ("test", TEST_CONTEXTS)):
        samples = [make_sample(split, n, items, by_genre, seed)[0] for n in range(count)]
        write_table(run.path("samples", f"{split}.parquet"), samples_to_table(samples), SAMPLES_SCHEMA)
    made = [make_sample("train", n, items, by_genre, seed) for n in range(train_contexts)]
    samples, hidden = [s for s, _ in made], [h for _, h in made]
    write_table(run.path("samples", "train.parquet"), samples_to_table(samples), SAMPLES_SCHEMA)
    write_table(run.path("candidates", "train.parquet"),
                _candidates(samples, hidden, items, item_vectors, seed), CANDIDATES_SCHEMA)
    write_table(run.path("teacher.parquet"), _teacher(samples, hidden, items, run), TEACHER_SCHEMA)
    return run


def _candidates(samples: list[Sample], hidden: list[dict], items: list[Item], item_vectors: np.ndarray,
                seed: int, block: int = 2000) -> pa.Table:
    """Each train context's top-50 items by inner product (cited items excluded), in blocks of contexts."""
    ids = np.array([it.item_id for it in items])
    column = {int(i): k for k, i in enumerate(ids)}
    genre_mean = {g: item_vectors[[k for k, it in enumerate(items) if g in it.genres]].mean(0) for g in GENRES}
    parts = []
    for start in range(0, len(samples), block):
        chunk = slice(start, start + block)
        scores = context_vectors(hidden[chunk], genre_mean, seed + start) @ item_vectors.T
        for row, sample in enumerate(samples[chunk]):
            scores[row, [column[i] for i in sample.context_items]] = -np.inf
        similarity, top = top_k_rows(scores, CANDIDATES_PER_CONTEXT)
        parts.append(pa.table({
            "sample_id": pa.array(np.repeat([s.sample_id for s in samples[chunk]], CANDIDATES_PER_CONTEXT)),
            "item_id": pa.array(ids[top].ravel()),
            "rank": pa.array(np.tile(np.arange(CANDIDATES_PER_CONTEXT, dtype=np.int32), len(top))),
            "similarity": pa.array(similarity.ravel().astype(np.float32))}, schema=CANDIDATES_SCHEMA))
    return pa.concat_tables(parts)


def _teacher(samples: list[Sample], hidden: list[dict], items: list[Item], run: RunDir) -> pa.Table:
    """2,000 judged pairs: the first 200 train contexts, each with its gold item and 9 of its candidates."""
    from crs_core.artifacts import read_table

    candidates = read_table(run.path("candidates", "train.parquet"), CANDIDATES_SCHEMA)
    judged = min(TEACHER_CONTEXTS, len(samples))
    first = candidates.slice(0, judged * CANDIDATES_PER_CONTEXT).column("item_id").to_numpy()
    row_of = {it.item_id: k for k, it in enumerate(items)}
    rows = []
    for n in range(judged):
        rng = hidden[n]["rng"]
        ranked = first[n * CANDIDATES_PER_CONTEXT:(n + 1) * CANDIDATES_PER_CONTEXT]
        picked = [int(i) for i in ranked[:: CANDIDATES_PER_CONTEXT // (TEACHER_PAIRS_PER_CONTEXT - 1)]]
        gold = samples[n].targets[0]
        for item_id in [gold, *[i for i in picked if i != gold]][:TEACHER_PAIRS_PER_CONTEXT]:
            rows.append({"sample_id": samples[n].sample_id, "item_id": item_id,
                         "score": teacher_score(items[row_of[item_id]], hidden[n], item_id == gold, rng),
                         "rationale": "", "model": "synthetic-judge", "prompt_version": "scale-world",
                         "status": "ok", "error": None, "input_tokens": 0, "output_tokens": 0, "cached": False})
    return pa.Table.from_pylist(rows, schema=TEACHER_SCHEMA)
