"""Interactive evaluation in the style of iEvaLM (Wang et al., EMNLP 2023): an LLM plays the seeker.

For each sampled test dialogue, the recommender first ranks the catalog on the real context (turn 0, the
offline number on these samples). Then, turn by turn, the recommender's top 3 (context items excluded) are
appended as "System: I recommend A, B and C.", the seeker LLM, which knows the target movie(s) but must
not name them, answers as "User: ...", and the recommender ranks again on the grown dialogue. Hits are
counted with the FNSCRS protocol per (sample, target) pair and are cumulative: a target in the top k at
turn t counts for every later turn. A dialogue stops once a target is the top-1 recommendation (iEvaLM).
The seeker LLM sees the dialogue with the roles swapped (`seeker_view`): the recommender's turns are its
"user" messages, so its chat answer is the seeker's next turn (a transcript in one message made small
models echo the transcript instead of answering).

Leak guard: a seeker message that names a target (crs_core.titles.TitleGuard) is asked again with the
prompt's [retry] note, at most `leak_retries` times; if it still names it, the title is masked, and each
such event is counted in the summary. The recommender never sees a message that names the target.
"""

from __future__ import annotations

import dataclasses
import random
import re
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Protocol

from crs_core.artifacts import RunDir
from crs_core.config import Config
from crs_core.data.prepared import PreparedData
from crs_core.errors import CRSError
from crs_core.evaluation import VARIANTS, evaluate_rankings, rank_catalog
from crs_core.llm_chat import (
    ANSWER_CACHE_FILE,
    Answer,
    AnswerCache,
    ChatEndpoint,
    Usage,
    endpoint_config,
)
from crs_core.llm_recommender import ZeroShotRecommender, zero_shot_recommender
from crs_core.models import Recommender
from crs_core.prompt_file import ChatPrompt, load_chat_prompt
from crs_core.redaction import redacted_copy
from crs_core.schema import RECOMMENDER, SEEKER, Catalog, Sample
from crs_core.text import item_text
from crs_core.titles import TitleGuard

SIMULATE_FILE = "simulate.json"
SIMULATE_KS = (1, 10, 50)
SEEKER_PLACEHOLDERS = ("target",)
SHOWN = 3  # titles the recommender names per turn
NO_RECOMMENDATION = "I have no recommendation yet. What kind of movie are you looking for?"
_SPEAKER_TAG = re.compile(r"^\s*(user|seeker|you|me)\s*:\s*", re.IGNORECASE)
_OTHER_SPEAKER = re.compile(r"^\s*(system|recommender|assistant)\s*:", re.IGNORECASE | re.MULTILINE)


class Ranker(Protocol):
    name: str

    def rank(self, samples: Sequence[Sample]) -> list[list[int]]: ...


class SavedModelRanker:
    """A fitted Recommender as a ranker: its scores through the protocol's `rank_catalog` (top `top_n`)."""

    def __init__(self, name: str, model: Recommender, catalog: Catalog, top_n: int):
        self.name, self.model, self.catalog, self.top_n = name, model, catalog, top_n

    def rank(self, samples: Sequence[Sample]) -> list[list[int]]:
        return rank_catalog(self.model.score(samples), self.catalog, self.top_n).tolist()


def seeker_text(answer: str) -> str:
    """The seeker's message alone: a leading "User:" tag dropped, anything from a "System:" line on cut off."""
    text = _SPEAKER_TAG.sub("", answer.strip(), count=1)
    other = _OTHER_SPEAKER.search(text)
    text = " ".join((text[: other.start()] if other else text).split())
    if not text:
        raise ValueError("empty seeker message")
    return text


@dataclass(frozen=True)
class SeekerTurn:
    text: str | None  # None: every request failed (the dialogue ends there)
    leaked: bool = False  # the first reply named a target
    regenerations: int = 0
    masked: bool = False  # still named it after the regenerations: the title was masked
    answers: tuple[Answer, ...] = ()
    error: str | None = None


def seeker_view(sample: Sample) -> list[dict[str, str]]:
    """The dialogue as the seeker LLM sees it: recommender turns as "user" messages, its own turns as
    "assistant" messages (consecutive turns of one speaker merged), so its answer is the seeker's next turn."""
    messages: list[dict[str, str]] = []
    for role, text in zip(sample.context_roles, sample.context):
        chat_role = "user" if role == RECOMMENDER else "assistant"
        if not text:
            continue
        if messages and messages[-1]["role"] == chat_role:
            messages[-1]["content"] += "\n" + text
        else:
            messages.append({"role": chat_role, "content": text})
    return messages


class Seeker:
    """The simulated user: knows the target items, describes them, never passes their titles on."""

    def __init__(self, endpoint: ChatEndpoint, prompt: ChatPrompt, catalog: Catalog, leak_retries: int = 2):
        self.endpoint, self.prompt, self.catalog, self.leak_retries = endpoint, prompt, catalog, leak_retries

    def reply(self, sample: Sample, targets: Sequence[int]) -> SeekerTurn:
        items = [self.catalog.get(t) for t in targets if t in self.catalog]  # FNSCRS labels may be off-catalog
        guards = [TitleGuard(item.title) for item in items]
        messages = self.prompt.render(target="\n".join(item_text(item) for item in items)) + seeker_view(sample)
        answers = [self.endpoint.ask(messages, self.prompt.version, check=seeker_text)]
        if answers[-1].text is None:
            return SeekerTurn(None, answers=tuple(answers), error=answers[-1].error)
        text = seeker_text(answers[-1].text)
        leaked = any(guard.leaks(text) for guard in guards)
        while any(guard.leaks(text) for guard in guards) and self.prompt.retry and len(answers) <= self.leak_retries:
            messages = [*messages, {"role": "assistant", "content": text},
                        {"role": "user", "content": self.prompt.retry}]
            answers.append(self.endpoint.ask(messages, self.prompt.version, check=seeker_text))
            if answers[-1].text is None:
                break
            text = seeker_text(answers[-1].text)
        masked = any(guard.leaks(text) for guard in guards)
        for guard in guards:
            text = guard.mask(text)
        return SeekerTurn(text, leaked, len(answers) - 1, masked, tuple(answers))


def _say(sample: Sample, role: str, text: str) -> Sample:
    return dataclasses.replace(sample, context=(*sample.context, text), context_roles=(*sample.context_roles, role))


def pair_hits(ranking: Sequence[int], sample: Sample, ks: Sequence[int], top_n: int) -> dict:
    """{variant: {"counted": {target index}, k: {target index hit at k}}}, by the protocol itself
    (`evaluate_rankings` on each (sample, target) pair), so the rules match the offline numbers exactly."""
    out = {variant: {"counted": set(), **{k: set() for k in ks}} for variant in VARIANTS}
    for index, target in enumerate(sample.targets):
        result = evaluate_rankings([ranking], [dataclasses.replace(sample, targets=(target,))], ks, top_n)
        for variant in VARIANTS:
            if not result[variant]["n"]:
                continue
            out[variant]["counted"].add(index)
            for k in ks:
                if result[variant][f"recall@{k}"]:
                    out[variant][k].add(index)
    return out


@dataclass
class Dialogue:
    """One simulated conversation: the growing sample, cumulative hits and what was said."""

    origin: Sample
    sample: Sample
    hits: dict = field(default_factory=dict)  # {variant: {"counted": set, k: set}}, cumulative
    by_turn: list[dict] = field(default_factory=list)  # hit counts after each turn played
    shown: list[int] = field(default_factory=list)
    stopped_at: int | None = None
    error: str | None = None
    transcript: list[dict] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return self.stopped_at is None and self.error is None

    def record(self, turn: int, ranking: list[int], ks: Sequence[int], top_n: int) -> None:
        new = pair_hits(ranking, self.origin, ks, top_n)
        for variant, found in new.items():
            old = self.hits.setdefault(variant, {key: set() for key in found})
            for key, values in found.items():
                old[key] |= values
        self.by_turn.append({v: {key: len(values) for key, values in self.hits[v].items()} for v in VARIANTS})
        mentioned = set(self.origin.context_items)
        self.shown = [item for item in ranking if item not in mentioned][:SHOWN]
        self.transcript.append({"turn": turn, "top": self.shown})
        if self.shown and self.shown[0] in _wanted(self.origin):
            self.stopped_at = turn


def choose_samples(samples: Sequence[Sample], count: int, seed: int) -> list[Sample]:
    """`count` test dialogues at random (seeded), one sample each, among samples with a target not yet mentioned."""
    by_dialog: dict[str, list[Sample]] = {}
    for sample in samples:
        if any(t not in sample.context_items for t in sample.targets):
            by_dialog.setdefault(sample.dialog_id, []).append(sample)
    rng = random.Random(seed)
    chosen = sorted(by_dialog)
    rng.shuffle(chosen)
    return [rng.choice(by_dialog[dialog_id]) for dialog_id in chosen[:count]]


def simulate(ranker: Ranker, seeker: Seeker, samples: Sequence[Sample], catalog: Catalog, turns: int,
             ks: Sequence[int] = SIMULATE_KS, top_n: int = 100, concurrency: int = 4) -> dict:
    """Play every dialogue for up to `turns` seeker turns against `ranker`; cumulative Recall@k per turn count."""
    started = time.perf_counter()
    dialogues = [Dialogue(origin=s, sample=s) for s in samples]
    usage, seeker_turns = Usage(), []

    def rank(active: list[Dialogue], turn: int) -> None:
        for dialogue, ranking in zip(active, ranker.rank([d.sample for d in active])):
            dialogue.record(turn, ranking, ks, top_n)

    rank(dialogues, 0)
    for turn in range(1, turns + 1):
        active = [d for d in dialogues if d.active]
        if not active:
            break
        for d in active:
            d.sample = _say(d.sample, RECOMMENDER, recommendation_text([catalog.get(item).title for item in d.shown]))
        with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(active)))) as pool:
            replies = list(pool.map(lambda d: seeker.reply(d.sample, _wanted(d.origin)), active))
        for d, reply in zip(active, replies):
            seeker_turns.append(reply)
            for answer in reply.answers:
                usage.add(answer)
            d.transcript[-1]["system"] = d.sample.context[-1]
            if reply.text is None:
                d.error = reply.error
                continue
            d.sample = _say(d.sample, SEEKER, reply.text)
            d.transcript[-1].update(user=reply.text, leaked=reply.leaked, masked=reply.masked)
        rank([d for d in active if d.active], turn)
    return _summarise(ranker.name, dialogues, turns, ks, seeker_turns, usage, time.perf_counter() - started)


def recommendation_text(titles: Sequence[str]) -> str:
    """The recommender's turn: "I recommend A, B and C." (or a question when it has nothing to show)."""
    if not titles:
        return NO_RECOMMENDATION
    listed = f"{', '.join(titles[:-1])} and {titles[-1]}" if len(titles) > 1 else titles[0]
    return f"I recommend {listed}."


def _wanted(sample: Sample) -> list[int]:
    return list(dict.fromkeys(t for t in sample.targets if t not in sample.context_items))


def _summarise(name: str, dialogues: list[Dialogue], turns: int, ks: Sequence[int], seeker_turns: list[SeekerTurn],
               usage: Usage, seconds: float) -> dict:
    per_turn = []
    for turn in range(turns + 1):
        row: dict = {"turn": turn, "ranked": sum(len(d.by_turn) > turn for d in dialogues)}
        for variant in VARIANTS:
            counts = [d.by_turn[min(turn, len(d.by_turn) - 1)][variant] for d in dialogues]
            n = sum(c["counted"] for c in counts)
            row[variant] = {"n": n, **{f"recall@{k}": (sum(c[k] for c in counts) / n if n else 0.0) for k in ks}}
        per_turn.append(row)
    return {
        "model": name,
        "dialogues": len(dialogues),
        "turns": turns,
        "per_turn": per_turn,
        "stopped_early": dict(sorted(Counter(d.stopped_at for d in dialogues if d.stopped_at is not None).items())),
        "seeker": {
            "turns": len(seeker_turns),
            "failed": sum(t.text is None for t in seeker_turns),
            "leaked": sum(t.leaked for t in seeker_turns),
            "regenerations": sum(t.regenerations for t in seeker_turns),
            "fixed_by_regeneration": sum(t.leaked and not t.masked and t.text is not None for t in seeker_turns),
            "masked": sum(t.masked for t in seeker_turns),
            "usage": usage.as_dict(),
        },
        "errors": sorted({d.error for d in dialogues if d.error})[:5],
        "seconds": round(seconds, 2),
        "transcripts": [{"sample_id": d.origin.sample_id, "targets": _wanted(d.origin), "turns": d.transcript}
                        for d in dialogues],
    }


def format_turn_table(results: dict[str, dict]) -> str:
    """One line per (model, variant, turn count): n and cumulative Recall@k in %."""
    headers = ["model", "variant", "turns", "n", *(f"R@{k}" for k in SIMULATE_KS)]
    lines = [[name, variant, str(row["turn"]), str(row[variant]["n"]),
              *(f"{100 * row[variant][f'recall@{k}']:.2f}" for k in SIMULATE_KS)]
             for name, result in results.items() for variant in VARIANTS for row in result["per_turn"]]
    widths = [max(len(cell) for cell in column) for column in zip(headers, *lines)]

    def render(cells: list[str]) -> str:
        return "  ".join([cells[0].ljust(widths[0]), cells[1].ljust(widths[1]),
                          *(cell.rjust(width) for cell, width in zip(cells[2:], widths[2:]))])

    return "\n".join([render(headers), "  ".join("-" * w for w in widths), *(render(line) for line in lines)])


def format_seeker_summary(results: dict[str, dict]) -> str:
    lines = []
    for name, result in results.items():
        s = result["seeker"]
        stopped = ", ".join(f"{count} at turn {turn}" for turn, count in result["stopped_early"].items()) or "none"
        lines.append(f"{name}: {s['turns']} seeker turns ({s['failed']} failed), {s['leaked']} named the target -> "
                     f"{s['fixed_by_regeneration']} fixed by regeneration, {s['masked']} masked; target top-1 "
                     f"(dialogue stopped): {stopped}; {result['seconds']:.1f} s")
    return "\n".join(lines)


class Simulation:
    """The sampled test dialogues and the seeker of one run, to be played against any number of rankers.

    Every ranker meets the same dialogues and the same seeker (whose answers are cached), so rows compare.
    """

    def __init__(self, config: Config, data: PreparedData, seeker: Seeker, cache: AnswerCache):
        self.config, self.catalog, self.seeker, self.cache = config, data.catalog, seeker, cache
        self.samples = choose_samples(data.samples["test"], config.simulate.dialogues, config.seed)
        if not self.samples:
            raise CRSError("no test sample has a target that was not mentioned before: nothing to simulate")

    def play(self, ranker: Ranker) -> dict:
        """`simulate` for `simulate.turns` seeker turns; the zero-shot recommender's mapping summary is added."""
        result = simulate(ranker, self.seeker, self.samples, self.catalog, self.config.simulate.turns,
                          top_n=self.config.evaluation.top_n, concurrency=self.config.simulate.concurrency)
        if isinstance(ranker, ZeroShotRecommender):
            result["recommender"] = ranker.summary()
        return result

    def zero_shot(self) -> AbstractContextManager[ZeroShotRecommender]:
        """The zero-shot recommender of `config.zero_shot`, sharing this simulation's answer cache."""
        return zero_shot_recommender(self.config, self.catalog, self.cache)

    def report(self, results: dict[str, dict]) -> dict:
        """What simulate.json holds: settings (secrets redacted), seeker, samples and each ranker's result."""
        return {"settings": redacted_copy(dataclasses.asdict(self.config.simulate)),
                "seeker_model": self.seeker.endpoint.model, "seeker_prompt_version": self.seeker.prompt.version,
                "seed": self.config.seed, "samples": [s.sample_id for s in self.samples], "models": results}


@contextmanager
def open_simulation(config: Config, data: PreparedData, run: RunDir) -> Iterator[Simulation]:
    """A Simulation on the endpoint of `config.simulate` (the teacher's where unset), its answers cached in the run
    directory; the client and the cache are closed afterwards."""
    prompt = load_chat_prompt(config.simulate.prompt, SEEKER_PLACEHOLDERS, ends_with_user=False)
    with ExitStack() as stack:
        cache = AnswerCache(run.path(ANSWER_CACHE_FILE))
        stack.callback(cache.close)
        endpoint = ChatEndpoint(endpoint_config(config.teacher, config.simulate), cache=cache)
        stack.callback(endpoint.close)
        yield Simulation(config, data, Seeker(endpoint, prompt, data.catalog, config.simulate.leak_retries), cache)
