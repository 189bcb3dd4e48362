"""The OpenAI Batch API round trip for the LLM teacher: the same requests, answered within a day at half price.

`batch_requests` turns pairs into lines of a batch input file (one chat completion request each, with the
exact messages, model, temperature and max_tokens that `LLMTeacher` would send); `read_batch_output` turns
the batch output (and error) files back into Labels through the same strict `Score: N` parser. A request's
`custom_id` is "<sample_id>|<item_id>": the item id is digits only, so splitting at the last "|" maps it
back to its pair without ambiguity, whatever the sample id holds.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from crs_core.config import TeacherConfig
from crs_core.data.io import iter_jsonl, require
from crs_core.errors import DataError
from crs_core.schema import TEACHER_STATUS_FAILED, TEACHER_STATUS_OK
from crs_core.teacher.client import Label, Pair
from crs_core.teacher.prompt import PromptTemplate, ScoreParseError, parse_score

CHAT_COMPLETIONS_URL = "/v1/chat/completions"
BATCH_PRICE_FACTOR = 0.5  # the Batch API bills half the synchronous price per token
_SEPARATOR = "|"


@dataclass(frozen=True)
class BatchTeacher:
    """Who answered a batch: the configured model and prompt, as the rows and the summary name them."""

    model: str
    prompt_version: str


def custom_id(sample_id: str, item_id: int) -> str:
    return f"{sample_id}{_SEPARATOR}{item_id}"


def parse_custom_id(text: str) -> tuple[str, int]:
    """(sample_id, item_id) of a `custom_id`; ValueError when it is not one this module wrote."""
    sample_id, separator, item = text.rpartition(_SEPARATOR)
    if not separator or not sample_id or not item.isdigit():
        raise ValueError(f"{text!r} is not '<sample_id>|<item_id>'")
    return sample_id, int(item)


def batch_request(pair: Pair, prompt: PromptTemplate, config: TeacherConfig) -> dict:
    """One line of a batch input file: the chat completion request the synchronous teacher sends."""
    return {
        "custom_id": custom_id(pair.sample.sample_id, pair.item.item_id),
        "method": "POST",
        "url": CHAT_COMPLETIONS_URL,
        "body": {"model": config.model, "messages": prompt.render(pair.sample, pair.item),
                 "temperature": config.temperature, "max_tokens": config.max_tokens},
    }


def _answer(response: dict | None, error: dict | None) -> tuple[str | None, str | None, int, int]:
    """(answer text, error, input tokens, output tokens) of one output line; exactly one of text/error is set."""
    if error:
        return None, f"batch error {error.get('code', '?')}: {error.get('message', '')}", 0, 0
    body = response.get("body") if isinstance(response, dict) else None
    status = response.get("status_code") if isinstance(response, dict) else None
    if not isinstance(body, dict):
        return None, f"batch response without a body (status {status})", 0, 0
    usage = body.get("usage") or {}
    tokens_in, tokens_out = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    if status != 200:
        error_body = body.get("error")
        message = error_body.get("message", "") if isinstance(error_body, dict) else ""
        return None, f"HTTP {status}: {message}".strip(), tokens_in, tokens_out
    choices = body.get("choices")
    content = choices[0].get("message", {}).get("content") if choices and isinstance(choices[0], dict) else None
    if not isinstance(content, str):
        return None, "malformed response body: no choices[0].message.content", tokens_in, tokens_out
    return content, None, tokens_in, tokens_out


def read_batch_output(paths: Iterable[Path], pairs: dict[tuple[str, int], Pair], model: str,
                      prompt_version: str) -> dict[tuple[str, int], Label]:
    """Labels for the pairs that the batch output files answer, keyed by (sample_id, item_id).

    A line that is not JSON, lacks `custom_id`, names a pair outside `pairs` or repeats one is refused
    with its file, line and field. An answer without a valid last `Score:` line, an HTTP error or a
    request the batch could not run becomes a "failed" row (score null), with the tokens it used.
    """
    labels: dict[tuple[str, int], Label] = {}
    seen: dict[tuple[str, int], str] = {}
    for path in paths:
        for line, record in iter_jsonl(path):
            text = require(record, "custom_id", str, path, line)
            try:
                key = parse_custom_id(text)
            except ValueError as exc:
                raise DataError(path, f"unknown custom_id: {exc}", line=line, field="custom_id") from exc
            if key not in pairs:
                raise DataError(path, f"unknown custom_id {text!r}: not a pair that teach selects with this config "
                                "(was the batch exported with other teacher settings or seed?)",
                                line=line, field="custom_id")
            where = f"{path}, line {line}"
            if seen.setdefault(key, where) != where:
                raise DataError(path, f"custom_id {text!r} answered twice: first at {seen[key]}", line=line,
                                field="custom_id")
            response, error = record.get("response"), record.get("error")
            if response is None and not error:
                raise DataError(path, "neither a response nor an error", line=line, field="response")
            for name, value in (("response", response), ("error", error)):
                if value is not None and not isinstance(value, dict):
                    raise DataError(path, f"expected an object or null, got {type(value).__name__}", line=line,
                                    field=name)
            answer, failure, tokens_in, tokens_out = _answer(response, error)
            score = None
            if answer is not None:
                try:
                    score = parse_score(answer)
                except ScoreParseError as exc:
                    failure = f"unparsable answer: {exc}"
            labels[key] = Label(sample_id=key[0], item_id=key[1], score=score, rationale=answer or "", model=model,
                                prompt_version=prompt_version,
                                status=TEACHER_STATUS_OK if failure is None else TEACHER_STATUS_FAILED,
                                error=failure, input_tokens=tokens_in, output_tokens=tokens_out, requests=1)
    return labels
