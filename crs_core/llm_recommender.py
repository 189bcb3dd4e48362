"""A zero-shot LLM recommender (He et al., CIKM 2023): a chat model names movies for the dialogue so far.

The answer is a list of titles; each is mapped to a catalog id (crs_core/titles.py) and the mapped ids, in
answer order, are the ranking. The ranking is scored by the same FNSCRS protocol as every other model
(`evaluate_rankings`, both variants, n). It holds at most `titles` items and is never padded: an item the
model did not name is not ranked, so Recall@25/50 can be no higher than the mapped share allows.
Unmapped titles and the mapped share are reported, so a low number can be told apart from bad mapping.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from crs_core.config import Config
from crs_core.llm_chat import (
    AnswerCache,
    ChatEndpoint,
    Usage,
    endpoint_config,
)
from crs_core.prompt_file import ChatPrompt, load_chat_prompt
from crs_core.schema import Catalog, Sample
from crs_core.teacher.prompt import context_text
from crs_core.titles import (
    FUZZY_CUTOFF,
    TitleMatch,
    TitleMatcher,
    parse_title_list,
    rank_from_matches,
)

log = logging.getLogger(__name__)

ZERO_SHOT_NAME = "zero-shot"
PROMPT_PLACEHOLDERS = ("context", "count")
UNMAPPED_SHOWN = 25


@dataclass(frozen=True)
class Recommendation:
    """One answer: the titles named, how each mapped, the ranking; `error` is set when every request failed."""

    sample_id: str
    titles: tuple[str, ...]
    matches: tuple[TitleMatch, ...]
    ranking: tuple[int, ...]
    cached: bool = False
    error: str | None = None


class ZeroShotRecommender:
    """Ranks catalog items for dialogue samples by asking a chat model for `titles` movie titles."""

    name = ZERO_SHOT_NAME

    def __init__(self, endpoint: ChatEndpoint, catalog: Catalog, prompt: ChatPrompt, titles: int = 20,
                 concurrency: int = 4, fuzzy_cutoff: float = FUZZY_CUTOFF):
        self.endpoint = endpoint
        self.prompt = prompt
        self.titles = titles
        self.concurrency = max(1, concurrency)
        self.matcher = TitleMatcher(catalog, fuzzy_cutoff)
        self.usage = Usage()
        self.recommendations: list[Recommendation] = []

    def messages(self, sample: Sample) -> list[dict[str, str]]:
        return self.prompt.render(context=context_text(sample), count=str(self.titles))

    def recommend(self, sample: Sample) -> Recommendation:
        answer = self.endpoint.ask(self.messages(sample), self.prompt.version,
                                   check=lambda text: parse_title_list(text, self.titles))
        self.usage.add(answer)
        if answer.text is None:
            return Recommendation(sample.sample_id, (), (), (), error=answer.error)
        titles = tuple(parse_title_list(answer.text, self.titles))
        matches = tuple(self.matcher.match_all(titles))
        return Recommendation(sample.sample_id, titles, matches, tuple(rank_from_matches(matches)), answer.cached)

    def rank(self, samples: Sequence[Sample]) -> list[list[int]]:
        """One ranking per sample (best first), with at most `concurrency` requests in flight."""
        with ThreadPoolExecutor(max_workers=min(self.concurrency, max(1, len(samples)))) as pool:
            made = list(pool.map(self.recommend, samples))
        self.recommendations.extend(made)
        return [list(r.ranking) for r in made]

    def summary(self) -> dict:
        """What the answers held: titles named, the share mapped to the catalog (and how), the unmapped ones."""
        matches = [m for r in self.recommendations for m in r.matches]
        how = Counter(m.how for m in matches)
        mapped = len(matches) - how["unmapped"]
        unmapped = Counter(m.title for m in matches if m.item_id is None)
        answered = [r for r in self.recommendations if r.error is None]
        return {
            "model": self.endpoint.model,
            "prompt_version": self.prompt.version,
            "answers": len(self.recommendations),
            "failed": len(self.recommendations) - len(answered),
            "titles": len(matches),
            "titles_per_answer": len(matches) / len(answered) if answered else 0.0,
            "mapped": mapped,
            "mapped_share": mapped / len(matches) if matches else 0.0,
            "mapped_by": {key: how[key] for key in ("exact", "title", "fuzzy")},
            "ranked_per_answer": (sum(len(r.ranking) for r in answered) / len(answered)) if answered else 0.0,
            "unmapped_titles": len(unmapped),
            "unmapped_examples": [title for title, _ in unmapped.most_common(UNMAPPED_SHOWN)],
            "errors": sorted({r.error for r in self.recommendations if r.error})[:5],
            "usage": self.usage.as_dict(),
        }


@contextmanager
def zero_shot_recommender(config: Config, catalog: Catalog, cache: AnswerCache | None) -> Iterator[ZeroShotRecommender]:
    """A recommender as `config.zero_shot` says (the teacher's endpoint where unset); the client is closed after use."""
    settings = config.zero_shot
    prompt = load_chat_prompt(settings.prompt, PROMPT_PLACEHOLDERS)
    endpoint = ChatEndpoint(endpoint_config(config.teacher, settings), cache=cache)
    try:
        yield ZeroShotRecommender(endpoint, catalog, prompt, settings.titles, settings.concurrency,
                                  settings.fuzzy_cutoff)
    finally:
        endpoint.close()


def format_summary(summary: Mapping[str, Any]) -> str:
    usage = summary["usage"]
    by = summary["mapped_by"]
    lines = [
        f"zero-shot LLM: model {summary['model']}, prompt {summary['prompt_version']}",
        (f"answers {summary['answers']} (failed {summary['failed']}, from cache {usage['cached']}), "
         f"requests {usage['requests']}, tokens in/out {usage['input_tokens']}/{usage['output_tokens']}"),
        (f"titles {summary['titles']} ({summary['titles_per_answer']:.1f} per answer), mapped to the catalog "
         f"{summary['mapped']} = {100 * summary['mapped_share']:.1f}% (exact {by['exact']}, title {by['title']}, "
         f"fuzzy {by['fuzzy']}); {summary['ranked_per_answer']:.1f} items ranked per answer"),
    ]
    if summary["unmapped_examples"]:
        lines.append(f"unmapped titles ({summary['unmapped_titles']} distinct), e.g.: "
                     + "; ".join(summary["unmapped_examples"][:10]))
    return "\n".join(lines)
