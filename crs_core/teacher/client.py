"""The LLM teacher: an OpenAI-compatible chat client with visible retries, a cache and token accounting.

`ChatClient.chat` sends every chat request: the teacher's here, the zero-shot recommender's and the
simulated seeker's through crs_core.llm_chat. The `openai` client's own retries are off (`max_retries=0`):
every attempt goes through `_attempt` here, so retries are logged and counted, and an answer the caller's
check refuses (no valid `Score:` line) or a body that is not a chat completion at all is re-asked like a
transient error. A pair that still fails becomes a row with status "failed" and score None, never a 0.
The API key comes only from the environment variable named in the config and is never stored in rows,
logs, reprs or error texts (nor is a key put into `base_url` as user:password).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import openai
from openai.types.chat import ChatCompletion

from crs_core.config import TeacherConfig
from crs_core.errors import ConfigError
from crs_core.redaction import redact
from crs_core.schema import TEACHER_STATUS_FAILED, TEACHER_STATUS_OK, Item, Sample
from crs_core.teacher.cache import CachedAnswer, TeacherCache, cache_key
from crs_core.teacher.prompt import (
    PromptTemplate,
    context_text,
    item_text,
    load_prompt,
    parse_score,
)

log = logging.getLogger(__name__)

LOCAL_PLACEHOLDER_KEY = "EMPTY"  # what local servers without auth expect; only used for loopback URLs
MAX_BACKOFF_S = 60.0
_RETRYABLE_STATUS = {408, 409, 429}


@dataclass(frozen=True)
class Pair:
    """One (context, candidate) pair to label; `similarity` is the retrieval score when known."""

    sample: Sample
    item: Item
    similarity: float | None = None


@dataclass(frozen=True)
class Label:
    """A teacher's verdict on one pair: the fields of a teacher.parquet row plus the requests it cost."""

    sample_id: str
    item_id: int
    score: float | None
    rationale: str
    model: str
    prompt_version: str
    status: str
    error: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cached: bool = False
    requests: int = 0

    def row(self) -> dict:
        return {
            "sample_id": self.sample_id,
            "item_id": self.item_id,
            "score": self.score,
            "rationale": self.rationale,
            "model": self.model,
            "prompt_version": self.prompt_version,
            "status": self.status,
            "error": self.error,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cached": self.cached,
        }


def cost_usd(input_tokens: int, output_tokens: int, config: TeacherConfig) -> float:
    return (input_tokens * config.usd_per_1k_input_tokens + output_tokens * config.usd_per_1k_output_tokens) / 1000.0


def is_loopback_url(url: str | None) -> bool:
    host = urlparse(url or "").hostname
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_api_key(config: TeacherConfig) -> str:
    """The key from `$<api_key_env>`; a placeholder only for a loopback server, which needs no auth."""
    key = os.environ.get(config.api_key_env, "")
    if key:
        return key
    if is_loopback_url(config.base_url):
        return LOCAL_PLACEHOLDER_KEY
    raise ConfigError(f"no API key for {config.base_url}: set the environment variable {config.api_key_env} (the "
                      "api_key_env of the teacher, zero_shot or simulate section names it)")


class TransientError(Exception):
    """An attempt failed in a way that another attempt may fix (timeout, connection, 408/409/429/5xx, garbage body)."""


@dataclass(frozen=True)
class Reply:
    """The outcome of `ChatClient.chat`: `value` is what `check` made of the accepted answer.

    `ok` is False when every attempt failed; then `error` says why and `text` is the last answer received
    ("" when none arrived). Tokens and requests count every attempt, the failed ones included.
    """

    ok: bool
    text: str
    value: Any = None
    error: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    requests: int = 0


class ChatClient:
    """Any OpenAI-compatible chat endpoint (OpenAI, vLLM, `transformers serve`), asked with visible retries.

    `log_name` prefixes the retry warnings ("teacher retry 2/3 ...").
    """

    log_name = "chat"

    def __init__(self, config: TeacherConfig):
        self.config = config
        self.model = config.model
        self.base_url = config.base_url
        key = resolve_api_key(config)
        url = urlparse(config.base_url or "")
        url_secret = url.password or url.username  # https://user:KEY@host or https://KEY@host
        self._scrub_values = tuple(v for v in (key, url_secret) if v and v != LOCAL_PLACEHOLDER_KEY)
        if url_secret:  # httpx turns them into Basic auth, which replaces the Bearer key from the environment
            log.warning("teacher.base_url carries credentials: they are sent instead of $%s; keep keys in the "
                        "environment (they are redacted from logs and the saved config)", config.api_key_env)
        self._client = openai.OpenAI(base_url=config.base_url, api_key=key, timeout=config.timeout_s, max_retries=0)
        self._lock = threading.Lock()
        self.requests = 0  # HTTP requests sent by this client, retries included

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r}, base_url={self._scrub(str(self.base_url))!r})"

    __str__ = __repr__

    def chat(self, messages: list[dict[str, str]], check: Callable[[str], Any] = lambda text: None,
             refused: str = "refused answer", subject: str = "") -> Reply:
        """Send `messages`, up to 1 + max_retries times; never raises for a bad answer or a failed request.

        `check(text)` raises ValueError for an answer to ask again (the error then reads "<refused>: <why>");
        transient errors are asked again too, any other error ends the attempts. `subject` names what is
        asked for in the retry warnings.
        """
        about = f" for {subject}" if subject else ""
        tokens_in = tokens_out = requests = 0
        text, error = "", "not attempted"
        for attempt in range(self.config.max_retries + 1):
            if attempt:
                delay = self._backoff(attempt)
                log.warning("%s retry %d/%d%s in %.2fs: %s", self.log_name, attempt, self.config.max_retries, about,
                            delay, error)
                time.sleep(delay)
            requests += 1
            try:
                text, used_in, used_out = self._attempt(messages)
                tokens_in, tokens_out = tokens_in + used_in, tokens_out + used_out
                value = check(text)
            except ValueError as exc:
                error = f"{refused}: {exc}"
                continue
            except TransientError as exc:
                error = str(exc)
                continue
            except Exception as exc:  # noqa: BLE001 - one bad request must not abort a whole stage
                error = self._scrub(f"{type(exc).__name__}: {exc}")
                break
            return Reply(True, text, value, None, tokens_in, tokens_out, requests)
        log.warning("%s failed%s after %d request(s): %s", self.log_name, about, requests, error)
        return Reply(False, text, None, error, tokens_in, tokens_out, requests)

    def _attempt(self, messages: list[dict[str, str]]) -> tuple[str, int, int]:
        """One HTTP request -> (answer text, input tokens, output tokens); transient errors -> TransientError."""
        with self._lock:
            self.requests += 1
        try:
            response = self._client.chat.completions.create(
                model=self.model, messages=messages, temperature=self.config.temperature,
                max_tokens=self.config.max_tokens,
            )
        except (openai.APITimeoutError, openai.APIConnectionError) as exc:
            raise TransientError(self._scrub(f"{type(exc).__name__}: {exc}")) from exc
        except json.JSONDecodeError as exc:  # a proxy's or an overloaded server's broken body: ask again
            raise TransientError(f"malformed response body: {exc}") from exc
        except openai.APIStatusError as exc:
            text = self._scrub(f"HTTP {exc.status_code} {type(exc).__name__}: {exc}")
            if exc.status_code in _RETRYABLE_STATUS or exc.status_code >= 500:
                raise TransientError(text) from exc
            raise RuntimeError(text) from exc
        if not isinstance(response, ChatCompletion):  # e.g. an HTML error page served with status 200
            raise TransientError(self._scrub(f"malformed response body: {str(response)[:80]!r}"))
        usage = response.usage
        used_in = int(getattr(usage, "prompt_tokens", 0) or 0)
        used_out = int(getattr(usage, "completion_tokens", 0) or 0)
        answer = response.choices[0].message.content if response.choices else None
        return answer or "", used_in, used_out

    def _backoff(self, attempt: int) -> float:
        """Exponential (backoff_s * 2^(attempt-1)) with +-50% jitter, so parallel retries spread out."""
        return min(MAX_BACKOFF_S, self.config.backoff_s * 2 ** (attempt - 1)) * random.uniform(0.5, 1.5)

    def _scrub(self, text: str) -> str:
        return redact(text, self._scrub_values)

    def close(self) -> None:
        self._client.close()


class LLMTeacher(ChatClient):
    """Rates pairs with a chat model: the rubric prompt, a `Score:` line parsed from each answer, a cache."""

    log_name = "teacher"

    def __init__(self, config: TeacherConfig, cache: TeacherCache | None = None,
                 prompt: PromptTemplate | None = None):
        super().__init__(config)
        self.prompt = prompt or load_prompt(config.prompt)
        self.prompt_version = self.prompt.version
        self.cache = cache

    def __repr__(self) -> str:
        return (f"LLMTeacher(model={self.model!r}, base_url={self._scrub(str(self.base_url))!r}, "
                f"prompt_version={self.prompt_version!r})")

    __str__ = __repr__

    def label_many(self, pairs: Sequence[Pair], progress: Callable[[Label], None] | None = None) -> list[Label]:
        """Label every pair with at most `concurrency` requests in flight; results in input order."""
        if not pairs:
            return []

        def one(pair: Pair) -> Label:
            label = self.label(pair)
            if progress is not None:
                progress(label)
            return label

        with ThreadPoolExecutor(max_workers=max(1, min(self.config.concurrency, len(pairs)))) as pool:
            return list(pool.map(one, pairs))

    def label(self, pair: Pair) -> Label:
        """One pair: from the cache, or asked up to 1 + max_retries times; never raises for a bad answer."""
        key = cache_key(self.prompt_version, self.model, context_text(pair.sample), pair.item.item_id,
                        item_text(pair.item))
        hit = self.cache.get(key) if self.cache is not None else None
        if hit is not None:
            return self._label(pair, TEACHER_STATUS_OK, hit.score, hit.answer, None,
                               hit.input_tokens, hit.output_tokens, cached=True, requests=0)
        reply = self.chat(self.prompt.render(pair.sample, pair.item), check=parse_score, refused="unparsable answer",
                          subject=f"{pair.sample.sample_id}/{pair.item.item_id}")
        if reply.ok and self.cache is not None:
            self.cache.put(key, CachedAnswer(reply.value, reply.text, reply.input_tokens, reply.output_tokens),
                           self.model, self.prompt_version)
        return self._label(pair, TEACHER_STATUS_OK if reply.ok else TEACHER_STATUS_FAILED, reply.value, reply.text,
                           reply.error, reply.input_tokens, reply.output_tokens, requests=reply.requests)

    def _label(self, pair: Pair, status: str, score: float | None, answer: str, error: str | None,
               tokens_in: int, tokens_out: int, cached: bool = False, requests: int = 0) -> Label:
        return Label(sample_id=pair.sample.sample_id, item_id=pair.item.item_id, score=score, rationale=answer,
                     model=self.model, prompt_version=self.prompt_version, status=status, error=error,
                     input_tokens=tokens_in, output_tokens=tokens_out, cached=cached, requests=requests)
