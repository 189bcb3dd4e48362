"""Free-text chat requests (the zero-shot recommender, the simulated seeker) over the teacher's client.

`ChatClient` (crs_core/teacher/client.py) already owns what an OpenAI-compatible client needs here: the API
key from the environment only, redaction of secrets, the split of transient from permanent errors, and
jittered exponential backoff. `ChatEndpoint` asks it with a caller's check instead of the `Score:` parser,
so a free-text answer is re-asked exactly like an unparsable score. Successful answers are cached on disk
by (prompt version, model, rendered messages, max_tokens, temperature), so a rerun costs nothing; refused
or failed answers are never cached, so a rerun asks for them again (as the teacher does).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from crs_core.config import SimulateConfig, TeacherConfig, ZeroShotConfig
from crs_core.teacher.cache import KeyedAnswers
from crs_core.teacher.client import ChatClient

ANSWER_CACHE_FILE = "llm_answers.sqlite"


def answer_key(prompt_version: str, model: str, messages: list[dict[str, str]], max_tokens: int,
               temperature: float) -> str:
    """What determines an answer: a longer token budget or another temperature must not reuse a cached one."""
    payload = json.dumps([prompt_version, model, messages, max_tokens, temperature], ensure_ascii=False,
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


@dataclass(frozen=True)
class Answer:
    """One request's outcome: `text` is None when every attempt failed (then `error` says why)."""

    text: str | None
    error: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    requests: int = 0
    cached: bool = False


class AnswerCache(KeyedAnswers):
    """Accepted free-text answers (thread-safe SQLite, the same store as the teacher's cache)."""

    COLUMNS = (("answer", "TEXT"), ("model", "TEXT"), ("prompt_version", "TEXT"), ("input_tokens", "INTEGER"),
               ("output_tokens", "INTEGER"))

    def __init__(self, path: Path):
        super().__init__(path, self.COLUMNS)

    def get(self, key: str) -> Answer | None:
        row = self.read(key)
        return None if row is None else Answer(text=row["answer"], input_tokens=row["input_tokens"],
                                               output_tokens=row["output_tokens"], cached=True)

    def put(self, key: str, answer: Answer, model: str, prompt_version: str) -> None:
        self.write(key, answer=answer.text, model=model, prompt_version=prompt_version,
                   input_tokens=answer.input_tokens, output_tokens=answer.output_tokens)


def endpoint_config(teacher: TeacherConfig, section: ZeroShotConfig | SimulateConfig) -> TeacherConfig:
    """The teacher's endpoint settings (URL, model, key variable, retries, timeout) under the section's own."""
    overrides = {"base_url": section.base_url, "model": section.model, "api_key_env": section.api_key_env,
                 "max_tokens": section.max_tokens, "temperature": section.temperature,
                 "concurrency": section.concurrency}
    return dataclasses.replace(teacher, kind="openai", **{k: v for k, v in overrides.items() if v is not None})


class ChatEndpoint(ChatClient):
    """A chat client asked for free text: `ask` re-asks (with backoff) when `check` refuses an answer."""

    def __init__(self, config: TeacherConfig, cache: AnswerCache | None = None):
        super().__init__(config)
        self.answers = cache

    def ask(self, messages: list[dict[str, str]], prompt_version: str,
            check: Callable[[str], object] = lambda text: None) -> Answer:
        """The answer to `messages`, from the cache or up to 1 + max_retries requests; never raises for a bad answer.

        `check(text)` raises ValueError for an answer that must be asked again (e.g. no parsable title).
        """
        key = answer_key(prompt_version, self.model, messages, self.config.max_tokens, self.config.temperature)
        hit = self.answers.get(key) if self.answers is not None else None
        if hit is not None:
            return hit
        reply = self.chat(messages, check=check)
        if not reply.ok:
            return Answer(None, reply.error, reply.input_tokens, reply.output_tokens, reply.requests)
        answer = Answer(reply.text, None, reply.input_tokens, reply.output_tokens, reply.requests)
        if self.answers is not None:
            self.answers.put(key, answer, self.model, prompt_version)
        return answer


@dataclass
class Usage:
    """Requests and tokens spent by one component (the seeker, a zero-shot recommender)."""

    calls: int = 0
    requests: int = 0
    cached: int = 0
    failed: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, answer: Answer) -> None:
        with self._lock:
            self.calls += 1
            self.requests += answer.requests
            self.cached += answer.cached
            self.failed += answer.text is None
            self.input_tokens += answer.input_tokens
            self.output_tokens += answer.output_tokens

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if not f.name.startswith("_")}
