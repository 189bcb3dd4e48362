"""Prompt files: chat messages in a versioned text file, shared by the teacher, the zero-shot recommender and
the simulated seeker.

A file is `[system]`, `[user]` and `[assistant]` sections (earlier user/assistant pairs are examples), with `#`
comment lines allowed before the first, `$name` placeholders, and optionally a `[retry]` note that a chat caller
sends after a refused answer. Packaged prompts live in `crs_core/prompts/<name>.txt`; any file works by path. The
version is derived from a hash of the text, so editing a prompt invalidates every cached answer made with it.
"""

from __future__ import annotations

import hashlib
import re
import string
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from crs_core.errors import ConfigError

SECTION = re.compile(r"^\[(system|user|assistant|retry)\][ \t]*\n", re.MULTILINE)


@dataclass(frozen=True)
class ChatPrompt:
    """Chat messages with `$name` placeholders, plus an optional `[retry]` note sent after a refused answer."""

    name: str
    version: str
    messages: tuple[tuple[str, str], ...]  # (role, content)
    retry: str | None = None

    def render(self, **values: str) -> list[dict[str, str]]:
        return [{"role": role, "content": string.Template(text).substitute(values)} for role, text in self.messages]


def text_version(text: str, label: str) -> str:
    """`<label>-<first 8 hex digits of the text's sha256>`."""
    return f"{label}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def parse_chat_prompt(text: str, name: str, placeholders: tuple[str, ...], ends_with_user: bool = True,
                      version: str | None = None) -> ChatPrompt:
    """Split a prompt file into messages; fail now (not mid-run) on a bad layout or a missing placeholder.

    `ends_with_user=False` is for prompts that a dialogue's messages follow (the simulated seeker's); `version`
    replaces the default `text_version(text, name)`."""
    parts = SECTION.split(text)
    preamble = parts[0].splitlines()
    if len(parts) < 3 or any(line.strip() and not line.startswith("#") for line in preamble):
        raise ConfigError(f"prompt {name}: expected [system]/[user]/[assistant] sections (only # comments before)")
    sections = [(parts[i], parts[i + 1].strip()) for i in range(1, len(parts), 2)]
    retry = next((body for role, body in sections if role == "retry"), None)
    messages = tuple((role, body) for role, body in sections if role != "retry")
    if not messages or ends_with_user and messages[-1][0] != "user":
        raise ConfigError(f"prompt {name}: the last chat section must be [user]")
    joined = "\n".join(body for _, body in messages)
    try:
        string.Template(joined).substitute({p: "" for p in placeholders})
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"prompt {name}: bad placeholder: {exc}") from exc
    missing = [p for p in placeholders if f"${p}" not in joined and f"${{{p}}}" not in joined]
    if missing:
        raise ConfigError(f"prompt {name}: lacks ${', $'.join(missing)}")
    return ChatPrompt(name=name, version=version or text_version(text, name), messages=messages, retry=retry)


def read_prompt_file(name_or_path: str, setting: str) -> tuple[str, str]:
    """(text, name) of a packaged prompt by name or of a prompt file by path; `setting` names the config key in
    the error."""
    path = Path(name_or_path)
    if path.suffix == ".txt" or path.exists():
        if not path.is_file():
            raise ConfigError(f"{setting}: {path} is not a file")
        return path.read_text(encoding="utf-8"), path.stem
    resource = resources.files("crs_core").joinpath("prompts", f"{name_or_path}.txt")
    if not resource.is_file():
        raise ConfigError(f"{setting}: no packaged prompt {name_or_path!r} (crs_core/prompts/*.txt)")
    return resource.read_text(encoding="utf-8"), name_or_path


def load_chat_prompt(name_or_path: str, placeholders: tuple[str, ...], ends_with_user: bool = True,
                     setting: str = "prompt") -> ChatPrompt:
    """A packaged prompt by name (crs_core/prompts/<name>.txt) or any prompt file by path."""
    text, name = read_prompt_file(name_or_path, setting)
    return parse_chat_prompt(text, name, placeholders, ends_with_user)
