"""The offline teacher: a transparent rubric over knowledge-graph metadata, not a language model.

No strong LLM exists on an offline machine, so the default teacher scores a (context, candidate) pair from
what the KG knows: does the candidate share genres, its director or its stars with the movies mentioned
so far and with the genre/person names said in the dialogue, and how similar did retrieval find it. It
cannot read negations ("no horror please"), so it never gives the rubric's "contradicts" 0 for that
reason; it is a reproducible stand-in that exercises the pipeline, and its rows say `kg-rubric-v1`.

Formula (documented constants below), every term in [0, 1] before weighting:
    genre    = |candidate genres seen in the context| / |candidate genres|
    director = 1 if any candidate director is in the context, else 0
    stars    = min(#candidate stars in the context, 2) / 2
    sim      = clip((similarity - 0.2) / (0.6 - 0.2), 0, 1)      (0 when no similarity is given)
    points   = 2*genre + 1*director + 1*stars + 1*sim            (0..5)
    score    = min(4, floor(points + 0.5))                       (an integer 0..4, like the LLM's)
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

from crs_core.schema import TEACHER_STATUS_OK, Catalog, Item, Sample
from crs_core.teacher.client import Label, Pair

KG_TEACHER_MODEL = "kg-rubric-v1"
KG_RUBRIC_VERSION = "kg-v1"
GENRE_WEIGHT = 2.0
DIRECTOR_WEIGHT = 1.0
STAR_WEIGHT = 1.0
STAR_CAP = 2
SIM_WEIGHT = 1.0
SIM_LOW, SIM_HIGH = 0.2, 0.6  # cosine similarities of MiniLM retrieval mostly fall in this band


def _names(values) -> set[str]:
    return {v.strip().lower() for v in values if v and v.strip()}


def kg_score(sample: Sample, item: Item, catalog: Catalog, similarity: float | None = None) -> tuple[float, str]:
    """(score 0..4, rationale naming the matched attributes and ending with `Score: N`)."""
    said = _names(sample.context_entities)
    seen = [catalog.get(i) for i in sample.context_items if i in catalog and i != item.item_id]
    ctx_genres = said | _names(g for movie in seen for g in movie.genres)
    ctx_people = said | _names(p for movie in seen for p in (*movie.directors, *movie.stars))

    genres = [g for g in item.genres if g.strip().lower() in ctx_genres]
    directors = [d for d in item.directors if d.strip().lower() in ctx_people]
    stars = [s for s in item.stars if s.strip().lower() in ctx_people]
    genre = len(genres) / len(item.genres) if item.genres else 0.0
    director = 1.0 if directors else 0.0
    star = min(len(stars), STAR_CAP) / STAR_CAP
    sim = 0.0 if similarity is None else min(1.0, max(0.0, (similarity - SIM_LOW) / (SIM_HIGH - SIM_LOW)))
    points = GENRE_WEIGHT * genre + DIRECTOR_WEIGHT * director + STAR_WEIGHT * star + SIM_WEIGHT * sim
    score = float(min(4, math.floor(points + 0.5)))

    def listed(values: list[str]) -> str:
        return ", ".join(values) if values else "none"

    sim_text = "no similarity given" if similarity is None else f"similarity {similarity:.3f} -> {sim:.2f}"
    rationale = "\n".join([
        f"Genres matched {len(genres)}/{len(item.genres)}: {listed(genres)} -> {genre:.2f}",
        f"Directors matched: {listed(directors)} -> {director:.0f}",
        f"Stars matched: {listed(stars)} -> {star:.2f}",
        f"Retrieval: {sim_text}",
        f"Points {GENRE_WEIGHT:g}*{genre:.2f} + {DIRECTOR_WEIGHT:g}*{director:.0f} + {STAR_WEIGHT:g}*{star:.2f}"
        f" + {SIM_WEIGHT:g}*{sim:.2f} = {points:.2f}",
        f"Score: {score:.0f}",
    ])
    return score, rationale


class KGTeacher:
    """Same interface and rows as LLMTeacher (status ok, zero tokens), computed locally in microseconds."""

    model = KG_TEACHER_MODEL
    prompt_version = KG_RUBRIC_VERSION
    requests = 0

    def __init__(self, catalog: Catalog):
        self.catalog = catalog

    def __repr__(self) -> str:
        return f"KGTeacher(model={self.model!r}, items={len(self.catalog)})"

    def label(self, pair: Pair) -> Label:
        score, rationale = kg_score(pair.sample, pair.item, self.catalog, pair.similarity)
        return Label(sample_id=pair.sample.sample_id, item_id=pair.item.item_id, score=score, rationale=rationale,
                     model=self.model, prompt_version=self.prompt_version, status=TEACHER_STATUS_OK)

    def label_many(self, pairs: Sequence[Pair], progress: Callable[[Label], None] | None = None) -> list[Label]:
        labels = []
        for pair in pairs:
            labels.append(self.label(pair))
            if progress is not None:
                progress(labels[-1])
        return labels

    def close(self) -> None:
        """Nothing to release; present so the stage treats both teachers alike."""
