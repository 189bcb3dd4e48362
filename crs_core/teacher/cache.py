"""On-disk caches of accepted LLM answers, so a rerun of the same requests costs nothing.

`KeyedAnswers` is the shared part: one SQLite table (stdlib) in the run directory, rows keyed by a hash
of what determines the answer, one connection guarded by a lock so a client's worker threads can share
it. Failed answers are never stored, so the next run asks for them again. `TeacherCache` keys teacher
scores by prompt version, model, the rendered context and the item.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

CACHE_FILE = "teacher_cache.sqlite"
TABLE = "answers"


def cache_key(prompt_version: str, model: str, context: str, item_id: int, item_text: str) -> str:
    payload = json.dumps([prompt_version, model, context, int(item_id), item_text], ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


class KeyedAnswers:
    """A thread-safe SQLite table `answers` of (key, `columns`..., created); use as a context manager or close().

    `columns` are (name, SQL type) pairs; the table is created on first use, so an existing file from an
    earlier run is reused as it is.
    """

    def __init__(self, path: Path, columns: tuple[tuple[str, str], ...]):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._names = tuple(name for name, _ in columns)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        declared = ", ".join(f"{name} {kind} NOT NULL" for name, kind in columns)
        with self._lock, self._db:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (key TEXT PRIMARY KEY, {declared},"
                             " created REAL NOT NULL)")

    def read(self, key: str) -> dict[str, Any] | None:
        """The row stored under `key` as {column: value}, or None."""
        with self._lock:
            row = self._db.execute(f"SELECT {', '.join(self._names)} FROM {TABLE} WHERE key = ?", (key,)).fetchone()
        return None if row is None else dict(zip(self._names, row))

    def write(self, key: str, **values: Any) -> None:
        """Store (or replace) the row under `key`; every column must be given."""
        if set(values) != set(self._names):
            raise ValueError(f"{self.path.name}: expected columns {', '.join(self._names)}, got {', '.join(values)}")
        names = (*self._names, "created")
        row = (key, *(values[name] for name in self._names), time.time())
        with self._lock, self._db:
            self._db.execute(f"INSERT OR REPLACE INTO {TABLE} (key, {', '.join(names)}) "
                             f"VALUES ({', '.join('?' * len(row))})", row)

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute(f"SELECT COUNT(*) FROM {TABLE}").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class CachedAnswer:
    score: float
    answer: str
    input_tokens: int
    output_tokens: int


class TeacherCache(KeyedAnswers):
    """Teacher answers with their parsed score."""

    COLUMNS = (("score", "REAL"), ("answer", "TEXT"), ("model", "TEXT"), ("prompt_version", "TEXT"),
               ("input_tokens", "INTEGER"), ("output_tokens", "INTEGER"))

    def __init__(self, path: Path):
        super().__init__(path, self.COLUMNS)

    def get(self, key: str) -> CachedAnswer | None:
        row = self.read(key)
        return None if row is None else CachedAnswer(row["score"], row["answer"], row["input_tokens"],
                                                     row["output_tokens"])

    def put(self, key: str, answer: CachedAnswer, model: str, prompt_version: str) -> None:
        self.write(key, score=answer.score, answer=answer.answer, model=model, prompt_version=prompt_version,
                   input_tokens=answer.input_tokens, output_tokens=answer.output_tokens)
