"""A source-independent dialogue and the FNSCRS/CFCRS rules that turn it into recommendation samples."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from crs_core.schema import RECOMMENDER, Sample


@dataclass
class Turn:
    """One (merged) utterance: movie mentions already rendered as titles in `text`."""

    role: str
    text: str
    items: list[int]
    entities: list[str]
    unmapped: list[str] = field(default_factory=list)


@dataclass
class Dialogue:
    dialog_id: str
    turns: list[Turn]


@dataclass
class MentionStats:
    """How many movie mentions mapped to a catalog item; the rest are invisible to every model."""

    mapped: int = 0
    unmapped: int = 0
    unmapped_titles: Counter = field(default_factory=Counter)

    @classmethod
    def of(cls, dialogues: Iterable[Dialogue]) -> MentionStats:
        stats = cls()
        for dialogue in dialogues:
            for turn in dialogue.turns:
                stats.mapped += len(turn.items)
                stats.unmapped += len(turn.unmapped)
                stats.unmapped_titles.update(turn.unmapped)
        return stats

    def as_dict(self) -> dict:
        total = self.mapped + self.unmapped
        return {
            "mentions": total,
            "mapped": self.mapped,
            "unmapped": self.unmapped,
            "unmapped_share": round(self.unmapped / total, 4) if total else 0.0,
            "top_unmapped": self.unmapped_titles.most_common(5),
        }


def _unique(values: Iterable) -> list:
    return list(dict.fromkeys(values))


def build_samples(
    dialogues: Iterable[Dialogue],
    require_context_entity: bool,
    drop_repeated_targets: bool,
) -> list[Sample]:
    """One sample per recommender turn that mentions >= 1 movie (CFCRS `*_rec/prepare.py`).

    INSPIRED (require_context_entity=False) needs a non-empty context; ReDial needs an entity or movie
    mentioned before the turn. With `drop_repeated_targets` (training only) targets already mentioned
    earlier are removed, a target named twice in the turn counts once, and samples left without targets
    are dropped. Valid/test keep every target as the turn lists it, repeats included, because FNSCRS's
    `final_evaluation` counts one (sample, label) pair per entry of `rec`.
    """
    samples: list[Sample] = []
    for dialogue in dialogues:
        context: list[str] = []
        roles: list[str] = []
        items: list[int] = []
        entities: list[str] = []
        for turn_id, turn in enumerate(dialogue.turns):
            targets = list(turn.items)
            has_context = bool(items or entities) if require_context_entity else bool(context)
            if turn.role == RECOMMENDER and targets and has_context:
                if drop_repeated_targets:
                    seen = set(items)
                    targets = [t for t in _unique(targets) if t not in seen]
                if targets:
                    samples.append(
                        Sample(
                            sample_id=f"{dialogue.dialog_id}#{turn_id}",
                            dialog_id=dialogue.dialog_id,
                            turn_id=turn_id,
                            context=tuple(context),
                            context_roles=tuple(roles),
                            context_items=tuple(_unique(items)),
                            context_entities=tuple(_unique(entities)),
                            targets=tuple(targets),
                        )
                    )
            context.append(turn.text)
            roles.append(turn.role)
            items.extend(turn.items)
            entities.extend(turn.entities)
    return samples
