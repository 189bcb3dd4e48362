"""Lexical and knowledge-graph evidence for retrieval: what the dialogue literally asks for.

From a sample's turns, weighted towards the newest seeker turns, `extract_preferences` reads the
catalog genres said (with synonyms such as "scary" for horror), whether each is negated in its clause
("not into horror", "no musicals"), the catalog people named, and the films cited so far. `LexicalIndex`
turns those preferences into one score per catalog item: its genres' weights, its people named, and
the people and genres it shares with the cited films. No collaborative statistics are used.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import sparse

from crs_core.config import LexicalConfig
from crs_core.schema import SEEKER, Item, Sample

# Words that say a catalog genre (a cue may name two: "rom-com" is comedy and romance).
GENRE_CUES = (
    (r"rom[- ]?coms?", ("comedy", "romance")),
    (r"dramas?|dramatic", ("drama",)),
    (r"comed(?:y|ies)|comedic|funny|funnier|hilarious|humou?r|laughs?", ("comedy",)),
    (r"thrillers?|suspense(?:ful)?", ("thriller",)),
    (r"action|superheroe?s?|super heroe?s?", ("action",)),
    (r"adventures?|adventurous", ("adventure",)),
    (r"sci[- ]?fi|science[- ]fiction|futuristic|outer space", ("sci-fi",)),
    (r"romance|romantic|love stor(?:y|ies)|chick flicks?", ("romance",)),
    (r"horror|scary|scarier|slashers?|creepy|spooky|frightening", ("horror",)),
    (r"crime|gangsters?|mafia|mob movies?|heists?", ("crime",)),
    (r"fantasy|fantasies|magical|wizards?", ("fantasy",)),
    (r"myster(?:y|ies)|whodunn?its?|detectives?", ("mystery",)),
    (r"family|families|kids?|children|child[- ]friendly", ("family",)),
    (r"biograph(?:y|ies|ical)|biopics?|true stor(?:y|ies)", ("biography",)),
    (r"animat(?:ed|ion)|cartoons?|pixar", ("animation",)),
    (r"war (?:movies?|films?|stor(?:y|ies))|wartime|world war", ("war",)),
    (r"histor(?:y|ical)|period pieces?", ("history",)),
    (r"musicals?", ("musical",)),
    (r"music", ("music",)),
    (r"sports?", ("sport",)),
    (r"documentar(?:y|ies)|docs", ("documentary",)),
    (r"westerns?|cowboys?", ("western",)),
)
GENRES = tuple(sorted({genre for _, genres in GENRE_CUES for genre in genres}))
GENRE_PATTERN = re.compile(r"\b(?:" + "|".join(rf"(?P<cue{i}>{cues})" for i, (cues, _) in enumerate(GENRE_CUES))
                           + r")\b")
# A cue word before a genre in the same clause negates it ("I don't like horror", "no musicals").
NEGATION = re.compile(r"\b(?:not|no|never|nothing|without|hate|hates|dislike|dislikes|avoid|can't stand|"
                      r"cannot stand|neither|nor|isn't|aren't|don't|doesn't|won't|wouldn't|can't|not a fan)\b")
NOT_NEGATION = re.compile(r"\b(?:don't|doesn't|wouldn't) mind\b|\bno matter\b")
CLAUSE_SPLIT = re.compile(r"[.!?;,]|\bbut\b|\bthough\b|\bhowever\b")
WORD = re.compile(r"[\w']+")


@dataclass(frozen=True)
class Preferences:
    genres: dict[str, float]  # catalog genre -> signed weight (< 0: disliked)
    people: dict[tuple[str, ...], float]  # a person's name as lower-cased words -> weight
    cited: dict[int, float]  # item id of a film mentioned so far -> weight (newest most)


def turn_weights(roles: Sequence[str], decay: float, recommender_turns: float) -> np.ndarray:
    """Weight per turn: the newest seeker turn 1, each older seeker turn `decay` times the next newer one;
    a recommender turn `recommender_turns` times the seeker turn that answers it."""
    weights = np.zeros(len(roles))
    current = answering = 1.0
    for i in range(len(roles) - 1, -1, -1):
        if roles[i] == SEEKER:
            weights[i] = answering = current
            current *= decay
        else:
            weights[i] = recommender_turns * answering
    return weights


def words(text: str) -> tuple[str, ...]:
    """Lower-cased word tokens, so that names match regardless of punctuation and case."""
    return tuple(WORD.findall(text.lower()))


@lru_cache(maxsize=65536)
def genre_mentions(text: str) -> dict[str, int]:
    """Catalog genres said in `text`: +1 when asked for, -1 when negated in their clause."""
    text = text.lower()
    clause_starts = [0] + [m.end() for m in CLAUSE_SPLIT.finditer(text)]
    found: dict[str, int] = {}
    for match in GENRE_PATTERN.finditer(text):
        start = clause_starts[bisect.bisect_right(clause_starts, match.start()) - 1]
        before = text[start:match.start()]
        sign = -1 if NEGATION.search(before) and not NOT_NEGATION.search(before) else 1
        for genre in GENRE_CUES[int(match.lastgroup[3:])][1]:
            found[genre] = min(found.get(genre, 1), sign)
    return found


class LexicalIndex:
    """The catalog as sparse genre and people incidence matrices, to score many samples at once."""

    def __init__(self, items: Sequence[Item], weights: LexicalConfig | None = None):
        self.weights = weights or LexicalConfig()
        self.item_ids = np.array([item.item_id for item in items], dtype=np.int64)
        self.column = {item_id: i for i, item_id in enumerate(self.item_ids.tolist())}
        self.genres = list(GENRES)
        genre_col = {g: j for j, g in enumerate(self.genres)}
        people = sorted({words(p) for item in items for p in (*item.directors, *item.stars)} - {()})
        self.person_col = {p: j for j, p in enumerate(people)}
        self.longest_name = max((len(p) for p in people), default=0)
        self._named: dict[str, set[tuple[str, ...]]] = {}
        rows, cols = [], []
        for i, item in enumerate(items):
            known = [genre_col[g] for g in item.genres if g in genre_col]
            rows += [i] * len(known)
            cols += known
        genre_matrix = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(items), len(self.genres)))
        counts = np.maximum(np.asarray(genre_matrix.sum(axis=1)).ravel(), 1.0)
        self.genre_share = sparse.diags(1.0 / counts) @ genre_matrix  # an item's genres sum to 1
        rows, cols = [], []
        for i, item in enumerate(items):
            named = {self.person_col[words(p)] for p in (*item.directors, *item.stars) if words(p)}
            rows += [i] * len(named)
            cols += sorted(named)
        self.person_matrix = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(items), len(people)))

    def people_named(self, text: str) -> set[tuple[str, ...]]:
        """Catalog people whose full name appears in `text` (as a run of words)."""
        if text not in self._named:
            tokens = words(text)
            self._named[text] = {tokens[i:i + n] for n in range(1, self.longest_name + 1)
                                 for i in range(len(tokens) - n + 1) if tokens[i:i + n] in self.person_col}
        return self._named[text]

    def preferences(self, sample: Sample) -> Preferences:
        """Genres, people and cited films of one sample, weighted by turn recency and negation."""
        w = self.weights
        genres: dict[str, float] = {}
        people: dict[str, float] = {}
        for weight, text in zip(turn_weights(sample.context_roles, w.decay, w.recommender_turns), sample.context):
            for genre, sign in genre_mentions(text).items():
                genres[genre] = genres.get(genre, 0.0) + sign * weight
            for name in self.people_named(text):
                people[name] = people.get(name, 0.0) + weight
        cited_ids = [i for i in sample.context_items if i in self.column]
        cited = {item_id: w.decay ** (len(cited_ids) - 1 - k) for k, item_id in enumerate(cited_ids)}
        return Preferences(genres, people, cited)

    def scores(self, samples: Sequence[Sample]) -> np.ndarray:
        """(len(samples), n_items) lexical evidence per sample and catalog item (0 = none)."""
        prefs = [self.preferences(s) for s in samples]
        genre_col = {g: j for j, g in enumerate(self.genres)}
        asked = self._rows(prefs, lambda p: ((genre_col[g], v) for g, v in p.genres.items()), len(self.genres))
        named = self._rows(prefs, lambda p: ((self.person_col[n], v) for n, v in p.people.items()),
                           len(self.person_col))
        cited = self._rows(prefs, lambda p: ((self.column[i], v) for i, v in p.cited.items()), len(self.item_ids))
        w = self.weights
        cited_people = cited @ self.person_matrix  # people of the cited films, weighted
        cited_genres = cited @ self.genre_share
        total = w.genre * (asked @ self.genre_share.T) + w.person * (named @ self.person_matrix.T)
        total = total + w.cited_person * (cited_people @ self.person_matrix.T)
        total = total + w.cited_genre * (cited_genres @ self.genre_share.T)
        return np.asarray(total.todense() if sparse.issparse(total) else total, dtype=np.float32)

    @staticmethod
    def _rows(prefs: list[Preferences], entries, width: int) -> sparse.csr_matrix:
        rows, cols, vals = [], [], []
        for r, p in enumerate(prefs):
            for c, v in entries(p):
                rows.append(r)
                cols.append(c)
                vals.append(v)
        return sparse.csr_matrix((vals, (rows, cols)), shape=(len(prefs), width))
