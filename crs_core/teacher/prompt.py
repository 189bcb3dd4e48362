"""The teacher's rubric prompt (a versioned text file) and the strict parser of its `Score: N` line.

The prompt text lives in `crs_core/prompts/<name>.txt`, not in code, and its version is derived from a
hash of that text: editing the file changes the version and so invalidates every cached answer.
"""

from __future__ import annotations

import hashlib
import re
import string
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from crs_core.errors import ConfigError
from crs_core.schema import Item, Sample
from crs_core.text import item_text, render_context

DEFAULT_PROMPT = "teacher_v1"
# Newest dialogue turns kept in the prompt (characters): long ReDial histories would otherwise dominate cost.
CONTEXT_CHAR_BUDGET = 4000
_SECTION = re.compile(r"^\[(system|user|assistant)\][ \t]*\n", re.MULTILINE)
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
    """Split a prompt file into chat messages and check it can be filled in (fails on a bad file, not mid-run)."""
    version = f"{name.removeprefix('teacher_')}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"
    parts = _SECTION.split(text)
    if len(parts) < 3 or parts[0].strip() and not all(
        line.startswith("#") or not line.strip() for line in parts[0].splitlines()
    ):
        raise ConfigError(f"prompt {name}: expected [system]/[user]/[assistant] sections (only # comments before)")
    messages = tuple((parts[i], parts[i + 1].strip()) for i in range(1, len(parts), 2))
    role, last = messages[-1]
    if role != "user":
        raise ConfigError(f"prompt {name}: the last section must be [user], got [{role}]")
    try:
        string.Template(last).substitute(context="", item="")
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"prompt {name}: bad placeholder in the last [user] section: {exc}") from exc
    for placeholder in ("$context", "$item"):
        if placeholder not in last:
            raise ConfigError(f"prompt {name}: the last [user] section lacks {placeholder}")
    return PromptTemplate(name=name, version=version, messages=messages)


def load_prompt(name_or_path: str = DEFAULT_PROMPT) -> PromptTemplate:
    """A packaged prompt by name (e.g. "teacher_v1") or any prompt file by path."""
    path = Path(name_or_path)
    if path.suffix == ".txt" or path.exists():
        if not path.is_file():
            raise ConfigError(f"teacher.prompt: {path} is not a file")
        return parse_prompt(path.read_text(encoding="utf-8"), path.stem)
    resource = resources.files("crs_core").joinpath("prompts", f"{name_or_path}.txt")
    if not resource.is_file():
        raise ConfigError(f"teacher.prompt: no packaged prompt {name_or_path!r} (crs_core/prompts/*.txt)")
    return parse_prompt(resource.read_text(encoding="utf-8"), name_or_path)


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
