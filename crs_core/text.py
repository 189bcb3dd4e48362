"""Rendering a sample's dialogue history as model input text."""

from __future__ import annotations

from collections.abc import Callable

from crs_core.schema import RECOMMENDER, Item, Sample

SPEAKER_TAGS = {RECOMMENDER: "System", "seeker": "User"}


def render_turns(sample: Sample) -> list[str]:
    """Each earlier turn as `User: ...` / `System: ...` (the tags the FNSCRS backbones use)."""
    return [f"{SPEAKER_TAGS[role]}: {text}" for role, text in zip(sample.context_roles, sample.context) if text]


def render_context(sample: Sample, budget: int | None = None, length: Callable[[str], int] = len,
                   separator: str = "\n") -> str:
    """The history joined by `separator`, keeping the NEWEST turns whose total `length` fits `budget`.

    `length` is a character count by default; pass a tokenizer-based count to budget in tokens. The
    newest turn is always kept (cut from its start if it alone exceeds the budget), since it usually
    holds the request the recommendation answers.
    """
    turns = render_turns(sample)
    if budget is None:
        return separator.join(turns)
    kept: list[str] = []
    used = 0
    for turn in reversed(turns):
        cost = length(turn) + (length(separator) if kept else 0)
        if kept and used + cost > budget:
            break
        kept.append(turn)
        used += cost
    if kept and length(kept[0]) > budget and length is len:
        kept[0] = kept[0][-budget:]
    return separator.join(reversed(kept))


def seeker_query(sample: Sample, turns: int) -> str:
    """The seeker's newest `turns` turns as `User: ...` lines: what the user asked for, without the recommender's
    suggestions and small talk (a retrieval query; the whole history when the seeker has not spoken yet)."""
    said = [f"{SPEAKER_TAGS[role]}: {text}" for role, text in zip(sample.context_roles, sample.context)
            if text and role != RECOMMENDER]
    return "\n".join(said[-turns:]) if said else render_context(sample)


def item_text(item: Item) -> str:
    """What a teacher or student reads about an item: the catalog description (title, genres, people, plot)."""
    return item.description or item.title
