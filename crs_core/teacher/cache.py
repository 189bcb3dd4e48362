"""On-disk cache of successful teacher answers, so a rerun of the same labelling costs nothing.

Keyed by what determines the answer: prompt version, model, the rendered context and the item. Failed
answers are never stored, so the next run retries them. SQLite (stdlib) in the run directory, one
connection guarded by a lock, so the client's worker threads can share it.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

CACHE_FILE = "teacher_cache.sqlite"


def cache_key(prompt_version: str, model: str, context: str, item_id: int, item_text: str) -> str:
    payload = json.dumps([prompt_version, model, context, int(item_id), item_text], ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


@dataclass(frozen=True)
class CachedAnswer:
    score: float
    answer: str
    input_tokens: int
    output_tokens: int


class TeacherCache:
    """A thread-safe key -> answer store; use as a context manager or call close()."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        with self._lock, self._db:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, score REAL NOT NULL, answer TEXT NOT NULL,"
                " model TEXT NOT NULL, prompt_version TEXT NOT NULL, input_tokens INTEGER NOT NULL,"
                " output_tokens INTEGER NOT NULL, created REAL NOT NULL)"
            )

    def get(self, key: str) -> CachedAnswer | None:
        with self._lock:
            row = self._db.execute(
                "SELECT score, answer, input_tokens, output_tokens FROM answers WHERE key = ?", (key,)
            ).fetchone()
        return None if row is None else CachedAnswer(*row)

    def put(self, key: str, answer: CachedAnswer, model: str, prompt_version: str) -> None:
        with self._lock, self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO answers (key, score, answer, model, prompt_version, input_tokens,"
                " output_tokens, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (key, answer.score, answer.answer, model, prompt_version, answer.input_tokens,
                 answer.output_tokens, time.time()),
            )

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> "TeacherCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
