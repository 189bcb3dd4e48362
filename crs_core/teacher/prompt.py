"""The teacher's rubric prompt (a versioned prompt file, crs_core/prompt_file.py) and the strict parser of its
`Score: N` line.

The prompt text lives in `crs_core/prompts/<name>.txt`, not in code, and its version is derived from a
hash of that text: editing the file changes the version and so invalidates every cached answer.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass

from crs_core.errors import ConfigError
from crs_core.prompt_file import parse_chat_prompt, read_prompt_file, text_version
from crs_core.schema import Item, Sample
from crs_core.text import item_text, render_context

DEFAULT_PROMPT = "teacher_v1"
# Newest dialogue turns kept in the prompt (characters): long ReDial histories would otherwise dominate cost.
CONTEXT_CHAR_BUDGET = 4000
_SCORE_LINE = re.compile(r"(?i:score):\s*([0-4])(?:\.0)?\s*")


class ScoreParseError(ValueError):
    """The answer does not end with a valid `Score: <0-4>` line; the client re-asks, then fails the row."""


@dataclass(frozen=True)
class PromptTemplate:
    """Chat messages with `$context` and `$item` in the last (user) message; earlier pairs are examples."""

    name: str
    version: str
    messages: tuple[tuple[str, str], ...]  # (role, content)

    def render(self, sample: Sample, item: Item) -> list[dict[str, str]]:
        """The messages for rating `item` as the next recommendation in `sample`'s dialogue."""
        values = {"context": context_text(sample), "item": item_text(item)}
        *examples, (role, last) = self.messages
        return [{"role": r, "content": c} for r, c in examples] + [
            {"role": role, "content": string.Template(last).substitute(values)}
        ]


def context_text(sample: Sample) -> str:
    """The dialogue history only: the turn being predicted (and so its target titles) is never shown."""
    return render_context(sample, budget=CONTEXT_CHAR_BUDGET) or "(no earlier turns)"


def parse_prompt(text: str, name: str) -> PromptTemplate:
    """A prompt file (crs_core/prompt_file.py) whose last [user] section holds `$context` and `$item`; fails on
    a bad file, not mid-run."""
    version = text_version(text, name.removeprefix("teacher_"))
    chat = parse_chat_prompt(text, name, ("context", "item"), version=version)
    role, last = chat.messages[-1]
    for placeholder in ("$context", "$item"):
        if placeholder not in last:
            raise ConfigError(f"prompt {name}: the last [user] section lacks {placeholder}")
    if chat.retry is not None:
        raise ConfigError(f"prompt {name}: a teacher prompt has no [retry] section (the client re-asks by itself)")
    return PromptTemplate(name=name, version=chat.version, messages=chat.messages)


def load_prompt(name_or_path: str = DEFAULT_PROMPT) -> PromptTemplate:
    """A packaged prompt by name (e.g. "teacher_v1") or any prompt file by path."""
    return parse_prompt(*read_prompt_file(name_or_path, "teacher.prompt"))


PROMPT_VERSION = load_prompt(DEFAULT_PROMPT).version


def parse_score(text: str) -> float:
    """The score on the answer's last non-blank line, which must be exactly `Score: <0-4>` (`.0` allowed).

    Strict on purpose: a score found anywhere else (mid-text, bold, "4/5", "3.5") is ambiguous, so it is
    rejected and re-asked rather than guessed.
    """
    lines = [line for line in (text or "").splitlines() if line.strip()]
    if not lines:
        raise ScoreParseError("empty answer")
    match = _SCORE_LINE.fullmatch(lines[-1].strip())
    if match is None:
        raise ScoreParseError(f"last line is not 'Score: <0-4>': {lines[-1].strip()[:80]!r}")
    return float(match.group(1))
