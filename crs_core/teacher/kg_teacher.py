"""The offline teacher: a transparent rubric over knowledge-graph metadata, not a language model.

No strong LLM exists on an offline machine, so the default teacher scores a (context, candidate) pair from
what the KG knows: does the candidate share genres, its director or its stars with the movies mentioned
so far and with the genre/person names said in the dialogue, and how high did retrieval place it. It
cannot read negations ("no horror please"), so it never gives the rubric's "contradicts" 0 for that
reason; it is a reproducible stand-in that exercises the pipeline, and its rows say `kg-rubric-v2`.

Evidence, every term in [0, 1] before weighting:
    genre    = |candidate genres seen in the context| / |candidate genres|
    director = 1 if any candidate director is in the context, else 0
    stars    = min(#candidate stars in the context, 2) / 2
    sim      = the pair's similarity as a percentile of all retrieved train candidates' similarities
               (encoder-independent: MiniLM and GritLM cosines live on different scales)
    points   = 2*genre + 1*director + 1*stars + 1*sim            (0..5)

Calibration (why not a fixed points -> score table): v1 rounded the points, which gave the movies users
actually accepted a median score of 2 and almost nothing a 4, although the scale defines 4 as "they would
very likely accept it". v2 anchors the scale on those accepted movies instead: the cuts for scores 1..4
are the 10th, 25th, 50th and 75th percentiles of the points of the train split's gold targets among their
retrieved candidates. So a quarter of the accepted movies score 4, and any other candidate with as much
evidence as they have scores as high. This uses only train labels, never valid/test, nor the paper's numbers.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from crs_core.schema import TEACHER_STATUS_OK, Catalog, Item, Sample
from crs_core.teacher.client import Label, Pair

KG_TEACHER_MODEL = "kg-rubric-v2"
KG_RUBRIC_VERSION = "kg-v2"
GENRE_WEIGHT = 2.0
DIRECTOR_WEIGHT = 1.0
STAR_WEIGHT = 1.0
STAR_CAP = 2
SIM_WEIGHT = 1.0
GOLD_PERCENTILES = (10, 25, 50, 75)  # the points of the accepted movies that score 1, 2, 3, 4 start at


def _names(values) -> set[str]:
    return {v.strip().lower() for v in values if v and v.strip()}


@dataclass(frozen=True)
class KGCalibration:
    """What the rubric learns from the train split: the similarity distribution and the score cuts."""

    similarities: tuple[float, ...]  # sorted similarities of all retrieved train candidates
    cuts: tuple[float, float, float, float]  # points at which scores 1, 2, 3 and 4 start

    def percentile(self, similarity: float | None) -> float:
        if similarity is None or not self.similarities:
            return 0.0
        return bisect.bisect_right(self.similarities, similarity) / len(self.similarities)

    def score(self, points: float) -> float:
        return float(bisect.bisect_right(self.cuts, points))

    def describe(self) -> dict:
        return {"cuts": [round(c, 4) for c in self.cuts], "similarities": len(self.similarities),
                "gold_percentiles": list(GOLD_PERCENTILES)}


@dataclass(frozen=True)
class Evidence:
    genres: list[str]
    directors: list[str]
    stars: list[str]
    genre: float
    director: float
    star: float
    sim: float

    @property
    def points(self) -> float:
        return (GENRE_WEIGHT * self.genre + DIRECTOR_WEIGHT * self.director + STAR_WEIGHT * self.star
                + SIM_WEIGHT * self.sim)


def evidence(sample: Sample, item: Item, catalog: Catalog, sim_percentile: float = 0.0) -> Evidence:
    """What the KG says links `item` to what the context mentioned (named entities and movies' metadata)."""
    said = _names(sample.context_entities)
    seen = [catalog.get(i) for i in sample.context_items if i in catalog and i != item.item_id]
    ctx_genres = said | _names(g for movie in seen for g in movie.genres)
    ctx_people = said | _names(p for movie in seen for p in (*movie.directors, *movie.stars))
    genres = [g for g in item.genres if g.strip().lower() in ctx_genres]
    directors = [d for d in item.directors if d.strip().lower() in ctx_people]
    stars = [s for s in item.stars if s.strip().lower() in ctx_people]
    return Evidence(genres, directors, stars,
                    genre=len(genres) / len(item.genres) if item.genres else 0.0,
                    director=1.0 if directors else 0.0,
                    star=min(len(stars), STAR_CAP) / STAR_CAP,
                    sim=sim_percentile)


def fit_calibration(pairs: Iterable[tuple[Sample, Item, float]], catalog: Catalog) -> KGCalibration:
    """Calibrate on (train sample, retrieved candidate, similarity) triples: all of a split's candidates."""
    pairs = list(pairs)
    if not pairs:
        raise ValueError("cannot calibrate the KG rubric without retrieved candidates")
    similarities = tuple(sorted(float(sim) for _, _, sim in pairs))
    partial = KGCalibration(similarities, (0.0, 0.0, 0.0, 0.0))
    gold = [evidence(s, item, catalog, partial.percentile(sim)).points
            for s, item, sim in pairs if item.item_id in s.targets]
    if not gold:
        raise ValueError("no gold target among the retrieved candidates: the KG rubric has nothing to anchor on")
    cuts = tuple(float(c) for c in np.percentile(gold, GOLD_PERCENTILES))
    return KGCalibration(similarities, cuts)  # type: ignore[arg-type]


def kg_score(sample: Sample, item: Item, catalog: Catalog, calibration: KGCalibration,
             similarity: float | None = None) -> tuple[float, str]:
    """(score 0..4, rationale naming the matched attributes and ending with `Score: N`)."""
    found = evidence(sample, item, catalog, calibration.percentile(similarity))
    score = calibration.score(found.points)

    def listed(values: list[str]) -> str:
        return ", ".join(values) if values else "none"

    sim_text = ("no similarity given" if similarity is None
                else f"similarity {similarity:.3f} -> percentile {found.sim:.2f}")
    rationale = "\n".join([
        f"Genres matched {len(found.genres)}/{len(item.genres)}: {listed(found.genres)} -> {found.genre:.2f}",
        f"Directors matched: {listed(found.directors)} -> {found.director:.0f}",
        f"Stars matched: {listed(found.stars)} -> {found.star:.2f}",
        f"Retrieval: {sim_text}",
        f"Points {GENRE_WEIGHT:g}*{found.genre:.2f} + {DIRECTOR_WEIGHT:g}*{found.director:.0f} + "
        f"{STAR_WEIGHT:g}*{found.star:.2f} + {SIM_WEIGHT:g}*{found.sim:.2f} = {found.points:.2f}; "
        f"cuts for 1..4: {', '.join(f'{c:.2f}' for c in calibration.cuts)}",
        f"Score: {score:.0f}",
    ])
    return score, rationale


class KGTeacher:
    """Same interface and rows as LLMTeacher (status ok, zero tokens), computed locally in microseconds."""

    model = KG_TEACHER_MODEL
    prompt_version = KG_RUBRIC_VERSION
    requests = 0

    def __init__(self, catalog: Catalog, calibration: KGCalibration):
        self.catalog = catalog
        self.calibration = calibration

    def __repr__(self) -> str:
        return f"KGTeacher(model={self.model!r}, items={len(self.catalog)}, cuts={self.calibration.describe()['cuts']})"

    def label(self, pair: Pair) -> Label:
        score, rationale = kg_score(pair.sample, pair.item, self.catalog, self.calibration, pair.similarity)
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
