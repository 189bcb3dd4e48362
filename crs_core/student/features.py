"""Cheap content features of (dialogue context, catalog item) pairs for the feature-based student.

What an LLM judge rewards, turned into numbers a gradient-boosted model can learn: the topics (genres and
their everyday words: "scary" for horror, "superhero") the seeker asks for NOW (latest turns weigh most),
the ones they rule out ("no horror", "don't like gore" -> a stated dislike), people named in the dialogue
against the item's director and stars, franchise words of the item's title said in the dialogue, how close
the item is to the movies the seeker cited and, for train contexts, to the movie the human recommender
picked (content similarity only), and the release year against "something new" / "old classics". No
collaborative statistics: nothing counts how often items are chosen.

Left out on purpose: the dialogue-item retrieval similarity. The judged non-gold pairs all come from the
retriever's top 50, so a model would learn "low similarity = the human's pick = relevant" and score the rest
of the catalog high; grouped CV also showed no gain from it (0.627 without vs 0.626 with).

Most features are dot products of a context row (vocabulary) and an item row, computed pair by pair,
so the features of ~1.4M pairs take about a minute. `pair_features` returns float32 columns named by
`FEATURE_NAMES`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from crs_core.schema import SEEKER, Catalog, Sample

# Topic -> regex over lower-cased text. A KG genre of the same name marks an item with the topic, and so does
# the regex on its title and plot.
TOPICS: dict[str, str] = {
    "action": r"\baction", "adventure": r"\badventur", "animation": r"\banimat|\bcartoon|\bpixar|\banime\b",
    "biography": r"\bbiograph|\bbiopic|\btrue stor", "comedy": r"\bcomed|\bfunny|\bcomedic|\bhilarious|\blaugh",
    "crime": r"\bcrime|\bgangster|\bmafia|\bmobster|\bheist", "documentary": r"\bdocumentar",
    "drama": r"\bdrama", "family": r"\bfamily|\bkids?\b|\bchildren|\bdisney",
    "fantasy": r"\bfantasy|\bmagic|\bwizard", "history": r"\bhistor|\bperiod piece",
    "horror": r"\bhorror|\bscary|\bscare|\bcreepy|\bslasher|\bzombie|\bghost|\bhaunt",
    "music": r"\bmusic\b|\bband\b|\bsinger", "musical": r"\bmusical", "mystery": r"\bmyster|\bwhodunit|\bdetective",
    "romance": r"\bromance|\bromantic|\brom-?com|\blove stor",
    "sci-fi": r"\bsci-?fi|\bscience fiction|\bspace\b|\balien",
    "sport": r"\bsports?\b|\bfootball|\bbasketball|\bbaseball|\bboxing",
    "thriller": r"\bthriller|\bsuspense|\bthrilling",
    "war": r"\bwars?\b(?! ?:)|\bmilitary|\bwwii|\bworld war", "western": r"\bwestern|\bcowboy",
    "superhero": r"\bsuper ?hero|\bmarvel|\bavenger|\bcomic|\bx-men|\bbatman|\bspider-?man|\bjustice league",
    "gore": r"\bgor(e|y)\b|\bgruesome|\bbloody|\bviolen",
}
NEGATORS = re.compile(r"\b(not|no|don'?t|do not|never|hate|hates|dislike|isn'?t|aren'?t|nothing|avoid|without|"
                      r"can'?t stand|not a fan|not into|not really|too)\b")
NEGATION_WINDOW = 40  # characters before a topic word in which a negator turns it into a dislike
WANTS_NEW = re.compile(r"\b(new|newer|newest|recent|recently released|latest|this year|in theaters|came out)\b")
WANTS_OLD = re.compile(r"\b(old|older|classic|classics|oldies|black and white)\b")
YEAR = re.compile(r"\((\d{4})\)\s*$")
TITLE_STOPWORDS = {"the", "a", "an", "of", "and", "in", "on", "to", "for", "part", "chapter", "movie", "vol",
                   "ii", "iii", "2", "3", "4", "i", "me", "my", "you", "is", "it", "at", "with", "from", "story"}
RECENCY_DECAY = 0.5  # weight of a seeker turn = decay ** (seeker turns after it)
NO_YEAR = 1990.0

FEATURE_NAMES = (
    "topic_latest", "topic_recent", "topic_seeker_decay", "topic_seeker_any", "topic_system_latest",
    "topic_negated", "topic_share_latest", "topic_share_decay", "context_topics", "latest_topics",
    "genre_share_cited", "genre_jaccard_cited_max", "people_named", "director_named", "stars_cited",
    "title_words_latest", "title_words_any", "cos_cited_max", "cos_cited_mean",
    "gold_cos_max", "gold_genre_jaccard", "gold_people",
    "item_year", "year_new_fit", "year_old_fit", "item_genres", "item_plot_chars", "item_is_short",
)


def _normalise(text: str) -> str:
    return " ".join(text.lower().replace("’", "'").split())


def topic_flags(text: str) -> np.ndarray:
    """Which TOPICS a text mentions (0/1 per topic)."""
    text = _normalise(text)
    return np.array([1.0 if re.search(p, text) else 0.0 for p in TOPICS.values()], dtype=np.float32)


def negated_topics(text: str) -> np.ndarray:
    """Topics mentioned right after a negator in the same sentence ("I don't like horror", "no gore")."""
    text = _normalise(text)
    out = np.zeros(len(TOPICS), dtype=np.float32)
    for k, pattern in enumerate(TOPICS.values()):
        for match in re.finditer(pattern, text):
            window = re.split(r"[.!?;]| but ", text[max(0, match.start() - NEGATION_WINDOW):match.start()])[-1]
            if NEGATORS.search(window):
                out[k] = 1.0
    return out


def title_words(title: str) -> set[str]:
    """Content words of a title without its year: the words that name a franchise."""
    bare = YEAR.sub("", title.lower())
    return {w for w in re.findall(r"[a-z0-9']+", bare) if w not in TITLE_STOPWORDS and len(w) > 1}


def item_year(title: str) -> float:
    match = YEAR.search(title)
    return float(match.group(1)) if match else np.nan


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", _normalise(text))


def _ngrams(words: list[str], longest: int = 4) -> set[str]:
    return {" ".join(words[k:k + n]) for n in range(1, longest + 1) for k in range(len(words) - n + 1)}


def _binary(rows: list[set[str]], vocab: dict[str, int]) -> sparse.csr_matrix:
    """(len(rows), len(vocab)) 0/1 in CSR: people and title words are a few per row out of tens of thousands."""
    return _ones_at([{vocab[v] for v in values if v in vocab} for values in rows], len(vocab))


def _ones_at(columns: list[set[int]], width: int) -> sparse.csr_matrix:
    """(len(columns), width) CSR with a 1 at each row's columns."""
    cols = [sorted(c) for c in columns]
    indptr = np.cumsum([0, *(len(c) for c in cols)])
    indices = np.fromiter((k for c in cols for k in c), dtype=np.int32, count=int(indptr[-1]))
    return sparse.csr_matrix((np.ones(len(indices), dtype=np.float32), indices, indptr), shape=(len(cols), width))


def _dense_row_sums(matrix: sparse.csr_matrix, chunk: int = 1024) -> np.ndarray:
    """Row sums exactly as numpy sums a dense float32 row (pairwise), a chunk of rows at a time."""
    return np.concatenate([matrix[k:k + chunk].toarray().sum(1) for k in range(0, matrix.shape[0], chunk)]
                          or [np.zeros(0, dtype=np.float32)])


def _title_weights(words: list[set[str]], vocab: dict[str, int]) -> sparse.csr_matrix:
    """Title words weighted by idf, each row summing to 1."""
    matrix = _binary(words, vocab)
    counts = np.asarray(matrix.sum(0), dtype=np.float32).ravel()
    matrix.data *= np.log(len(words) / np.maximum(counts, 1.0))[matrix.indices]
    matrix.data /= np.repeat(np.maximum(_dense_row_sums(matrix), 1e-9), np.diff(matrix.indptr))
    return matrix


def _off_diagonal(values: np.ndarray, rows: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Zero where a row item is compared with itself."""
    values[np.asarray(rows)[:, None] == np.asarray(others)[None, :]] = 0.0
    return values


@dataclass
class ItemSide:
    """Per catalog item (catalog order): topics, KG genres and people, title words, year, embedding and the
    embedding cosine table. Genre Jaccard and shared people are computed for the rows a context needs.

    The cosine table is the one catalog x catalog array (4 x items^2 bytes: 173 MB for ReDial's 6,576 items):
    numpy computes `emb @ emb.T` with syrk, whose last bits no per-row product reproduces, and a last-bit change
    in one feature changes the fitted trees and so every score. Computing it per pair (in float64, which would
    also make it independent of the BLAS build) is a deliberate numbers-changing step left for later."""

    topics: np.ndarray  # (I, T)
    genres: np.ndarray  # (I, G) KG genres
    people: sparse.csr_matrix  # (I, P) directors and stars
    directors: sparse.csr_matrix  # (I, P) directors only
    person_vocab: dict[str, int]
    title_vocab: dict[str, int]
    title_matrix: sparse.csr_matrix  # (I, W) idf weights, rows sum to 1
    years: np.ndarray
    item_plot_chars: np.ndarray
    embeddings: np.ndarray  # (I, d) L2-normalised
    cosine_table: np.ndarray  # (I, I) embedding cosine, diagonal zero

    @property
    def item_year(self) -> np.ndarray:
        return self.years

    @property
    def item_genres(self) -> np.ndarray:
        return self.genres.sum(1)

    @property
    def item_is_short(self) -> np.ndarray:
        return self.topics[:, list(TOPICS).index("documentary")]

    def cosine(self, rows: np.ndarray, others: list[int]) -> np.ndarray:
        """(len(rows), len(others)) embedding cosine; 0 for an item against itself."""
        return self.cosine_table[np.ix_(rows, others)]

    def jaccard(self, rows: np.ndarray, others: list[int]) -> np.ndarray:
        """KG genre Jaccard of the rows against `others`; 0 for an item against itself."""
        left, right = self.genres[rows], self.genres[others]
        inter = left @ right.T
        union = left.sum(1)[:, None] + right.sum(1)[None, :] - inter
        values = np.where(union > 0, inter / np.maximum(union, 1.0), 0.0).astype(np.float32)
        return _off_diagonal(values, rows, others)

    def shared_people(self, rows: np.ndarray, others: list[int]) -> np.ndarray:
        """People in common; 0 for an item against itself."""
        values = (self.people[rows] @ self.people[others].T).toarray().astype(np.float32)
        return _off_diagonal(values, rows, others)


def item_side(catalog: Catalog, embeddings: np.ndarray) -> ItemSide:
    items = catalog.items
    genre_sets = [{g.lower() for g in it.genres} for it in items]
    topics = np.stack([np.maximum(topic_flags(f"{it.title} {it.plot}"),
                                  np.array([t in genre_sets[k] for t in TOPICS], dtype=np.float32))
                       for k, it in enumerate(items)])
    genres = _binary(genre_sets, {g: k for k, g in enumerate(sorted(set().union(*genre_sets)))}).toarray()
    people_sets = [{" ".join(_words(p)) for p in (*it.directors, *it.stars)} for it in items]
    person_vocab = {p: k for k, p in enumerate(sorted(set().union(*people_sets) - {""}))}
    people = _binary(people_sets, person_vocab)
    directors = _binary([{" ".join(_words(p)) for p in it.directors} for it in items], person_vocab)
    words = [title_words(it.title) for it in items]
    vocab = {w: k for k, w in enumerate(sorted(set().union(*words)))}
    years = np.array([item_year(it.title) for it in items], dtype=np.float32)
    emb = np.asarray(embeddings, dtype=np.float32)
    cosine = emb @ emb.T
    np.fill_diagonal(cosine, 0.0)
    return ItemSide(topics, genres, people, directors, person_vocab, vocab, _title_weights(words, vocab),
                    np.nan_to_num(years, nan=NO_YEAR), np.array([len(it.plot) for it in items], dtype=np.float32),
                    emb, cosine.astype(np.float32, copy=False))


@dataclass
class ContextSide:
    """Per context: what the seeker asks for and rules out, words and people said, movies cited, gold targets."""

    topic_latest: np.ndarray  # (C, T) latest seeker turn
    topic_recent: np.ndarray  # (C, T) last two seeker turns
    topic_decay: np.ndarray  # (C, T) max recency weight over seeker turns
    topic_any: np.ndarray  # (C, T) any seeker turn
    topic_system: np.ndarray  # (C, T) latest recommender turn
    topic_negated: np.ndarray  # (C, T) negated in a seeker turn
    words_latest: sparse.csr_matrix  # (C, W) title words in the last three turns
    words_any: sparse.csr_matrix  # (C, W) title words anywhere
    people_named: sparse.csr_matrix  # (C, P) full names said
    directors_named: sparse.csr_matrix  # (C, P) full or last names said
    wants_new: np.ndarray
    wants_old: np.ndarray
    cited: list[list[int]]  # catalog rows of context_items
    gold: list[list[int]]  # catalog rows of targets (train contexts)


def _seeker_turns(sample: Sample) -> list[str]:
    return [t for t, r in zip(sample.context, sample.context_roles) if r == SEEKER and t]


def context_side(samples: Sequence[Sample], catalog: Catalog, items: ItemSide, use_gold: bool = True) -> ContextSide:
    n, t = len(samples), len(TOPICS)
    fields = {k: np.zeros((n, t), dtype=np.float32) for k in ("latest", "recent", "decay", "any", "system", "neg")}
    # Column sets per context, made as each context is read (its word n-grams are dropped at once: kept for
    # every context they would be the largest thing in memory).
    said: dict[str, list[set[int]]] = {"latest": [], "any": [], "people": [], "directors": []}
    person, title = items.person_vocab, items.title_vocab
    last_names: dict[str, set[int]] = {}
    for name, k in items.person_vocab.items():
        if len(name.split()[-1]) >= 5:
            last_names.setdefault(name.split()[-1], set()).add(k)
    director_ids = set(np.unique(items.directors.indices).tolist())
    new, old = np.zeros(n, dtype=np.float32), np.zeros(n, dtype=np.float32)
    for c, sample in enumerate(samples):
        seeker = _seeker_turns(sample)
        flags = [topic_flags(x) for x in seeker]
        if flags:
            fields["latest"][c] = flags[-1]
            fields["recent"][c] = np.max(flags[-2:], axis=0)
            fields["any"][c] = np.max(flags, axis=0)
            weights = RECENCY_DECAY ** np.arange(len(flags))[::-1]
            fields["decay"][c] = np.max(np.stack(flags) * weights[:, None], axis=0)
            fields["neg"][c] = np.max([negated_topics(x) for x in seeker], axis=0)
        system = [x for x, r in zip(sample.context, sample.context_roles) if r != SEEKER and x]
        if system:
            fields["system"][c] = topic_flags(system[-1])
        joined_seeker = _normalise(" ".join(seeker))
        new[c] = 1.0 if WANTS_NEW.search(joined_seeker) else 0.0
        old[c] = 1.0 if WANTS_OLD.search(joined_seeker) else 0.0
        words = _words(" ".join(sample.context))
        said["any"].append({title[w] for w in words if w in title})
        said["latest"].append({title[w] for w in _words(" ".join(sample.context[-3:])) if w in title})
        said["people"].append({person[g] for g in _ngrams(words) if g in person})
        said["directors"].append({k for w in words for k in last_names.get(w, ()) if k in director_ids})
    people = _ones_at(said["people"], len(person))
    directors = _ones_at([cols | found for cols, found in zip(said["people"], said["directors"])], len(person))
    cited = [[catalog.column(i) for i in s.context_items if i in catalog] for s in samples]
    gold = ([[catalog.column(i) for i in s.targets if i in catalog] for s in samples] if use_gold
            else [[] for _ in samples])
    return ContextSide(fields["latest"], fields["recent"], fields["decay"], fields["any"], fields["system"],
                       fields["neg"], _ones_at(said["latest"], len(title)), _ones_at(said["any"], len(title)),
                       people, directors, new, old, cited, gold)


def _max_over(similarity: Callable[[np.ndarray, list[int]], np.ndarray], rows: np.ndarray,
              others: list[int]) -> np.ndarray:
    """max over `others` of similarity(rows, others) (0 when there are none; an item against itself counts 0)."""
    return similarity(rows, others).max(1) if others else np.zeros(len(rows), dtype=np.float32)


def _row_dot(left: np.ndarray | sparse.csr_matrix, right: np.ndarray | sparse.csr_matrix, contexts: np.ndarray,
             position: np.ndarray, i: np.ndarray) -> np.ndarray:
    """<left[contexts[position[k]]], right[i[k]]> for every pair k, summed in ascending column order in float32
    (the order of a sparse matrix product, so the values are those of the contexts x catalog product) without
    materialising that product: dense (topic) rows column by column, sparse (word, people) rows through a sparse
    product whose few non-zeros are then looked up."""
    if sparse.issparse(left):
        product = (left[contexts] @ right.T).tocsr()
        return np.asarray(product[position, i], dtype=np.float32).ravel()
    rows, cols = left[contexts][position], right[i]
    total = np.zeros(len(i), dtype=np.float32)
    for t in range(rows.shape[1]):
        total += rows[:, t] * cols[:, t]
    return total


def _products(ctx: ContextSide, items: ItemSide, c: np.ndarray, i: np.ndarray) -> dict[str, np.ndarray]:
    """Every feature that is the dot product of a context row and an item row, per pair."""
    pairs = {
        "topic_latest": (ctx.topic_latest, items.topics), "topic_recent": (ctx.topic_recent, items.topics),
        "topic_seeker_decay": (ctx.topic_decay, items.topics), "topic_seeker_any": (ctx.topic_any, items.topics),
        "topic_system_latest": (ctx.topic_system, items.topics), "topic_negated": (ctx.topic_negated, items.topics),
        "title_words_latest": (ctx.words_latest, items.title_matrix),
        "title_words_any": (ctx.words_any, items.title_matrix),
        "people_named": (ctx.people_named, items.people), "director_named": (ctx.directors_named, items.directors),
    }
    contexts, position = np.unique(c, return_inverse=True)
    return {name: _row_dot(left, right, contexts, position, i) for name, (left, right) in pairs.items()}


def pair_features(ctx: ContextSide, items: ItemSide, c: np.ndarray, i: np.ndarray) -> np.ndarray:
    """(n, len(FEATURE_NAMES)) float32 features of the pairs (context row c[k], catalog row i[k]): products
    of context and item rows pair by pair, then the cited/gold similarities one context at a time."""
    c, i = np.asarray(c, dtype=np.int64), np.asarray(i, dtype=np.int64)
    out = np.zeros((len(c), len(FEATURE_NAMES)), dtype=np.float32)
    col = {name: k for k, name in enumerate(FEATURE_NAMES)}
    contexts = np.unique(c)
    for name, values in _products(ctx, items, c, i).items():
        out[:, col[name]] = values
    n_topics = np.maximum(items.topics.sum(1), 1.0)
    out[:, col["topic_share_latest"]] = out[:, col["topic_latest"]] / n_topics[i]
    out[:, col["topic_share_decay"]] = out[:, col["topic_seeker_decay"]] / n_topics[i]
    out[:, col["context_topics"]] = ctx.topic_any[c].sum(1)
    out[:, col["latest_topics"]] = ctx.topic_latest[c].sum(1)
    out[:, col["year_new_fit"]] = ctx.wants_new[c] * (items.years[i] - 2015.0)
    out[:, col["year_old_fit"]] = ctx.wants_old[c] * (2000.0 - items.years[i])
    for name in ("item_year", "item_genres", "item_plot_chars", "item_is_short"):
        out[:, col[name]] = getattr(items, name)[i]
    n_genres = np.maximum(items.genres.sum(1), 1.0)
    order = np.argsort(c, kind="stable")
    bounds = np.searchsorted(c[order], contexts)
    for cc, start, end in zip(contexts, bounds, [*bounds[1:], len(c)]):
        at = order[start:end]
        rows = i[at]
        cited, gold = ctx.cited[cc], ctx.gold[cc]
        f = {"genre_jaccard_cited_max": _max_over(items.jaccard, rows, cited),
             "gold_cos_max": _max_over(items.cosine, rows, gold),
             "gold_genre_jaccard": _max_over(items.jaccard, rows, gold),
             "gold_people": _max_over(items.shared_people, rows, gold)}
        if cited:
            f["genre_share_cited"] = (items.genres[rows] @ items.genres[cited].max(0)) / n_genres[rows]
            f["stars_cited"] = items.people[rows] @ items.people[cited].max(0).toarray().ravel()
            cos = items.cosine(rows, cited)
            f["cos_cited_max"], f["cos_cited_mean"] = cos.max(1), cos.mean(1)
        for name, value in f.items():
            out[at, col[name]] = value
    return out
