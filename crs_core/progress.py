"""Progress of a long loop: a tqdm bar on a terminal, at most one log line a minute anywhere else.

A bar redrawn with carriage returns is unreadable in a CI log or `crs run > log`, and a line per item
buries the stage summaries; a line a minute says the loop is alive and how far it got. Loops shorter than
a minute print nothing off a terminal.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator

log = logging.getLogger(__name__)
LOG_EVERY_S = 60.0
LOG_LEVEL_ENV = "CRS_LOG_LEVEL"  # `crs --log-level`, read again in Ray workers (crs_core.training.loop)
# "lines" off a terminal (set by rayjobs.console for this process and the Ray workers it starts), else "bars"
PROGRESS_ENV = "CRS_PROGRESS"


def interactive() -> bool:
    """Whether a person watches stderr live (a terminal), so redrawn progress bars read well."""
    return sys.stderr.isatty()


class LineProgress:
    """The part of tqdm's interface the project uses (iterate, `update`, `close`, `with`), as a log line
    `desc: done/total (elapsed, rate, left)` at most every `every_s` seconds."""

    def __init__(self, iterable: Iterable | None = None, total: int | None = None, desc: str = "",
                 every_s: float = LOG_EVERY_S, clock: Callable[[], float] = time.monotonic):
        self.iterable, self.total, self.desc, self.n = iterable, total, desc, 0
        self.every_s, self.clock = every_s, clock
        self.started = self.last_logged = clock()

    def __iter__(self) -> Iterator:
        for item in self.iterable:
            yield item
            self.update()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self.clock()
        if now - self.last_logged >= self.every_s:
            self.last_logged = now
            log.info("%s", self.line(now))

    def line(self, now: float) -> str:
        elapsed = now - self.started
        rate = self.n / elapsed if elapsed > 0 else 0.0
        done = f"{self.n:,}/{self.total:,}" if self.total else f"{self.n:,}"
        left = f", about {(self.total - self.n) / rate:.0f}s left" if self.total and rate > 0 else ""
        return f"{self.desc}: {done} ({elapsed:.0f}s, {rate:.1f}/s{left})"

    def close(self) -> None:
        """Nothing to tear down; the stage's summary follows."""

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress(iterable: Iterable | None = None, total: int | None = None, desc: str = "", on_terminal: bool = True):
    """tqdm on a terminal, LineProgress elsewhere; `total` defaults to len(iterable) where it has one.

    `on_terminal=False` for a loop that already has a bar on a terminal (a Ray Data pipeline's): it then
    only counts there, and logs a line a minute elsewhere."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    if interactive() and not on_terminal:
        return LineProgress(iterable, total=total, desc=desc, every_s=math.inf)
    if interactive():
        from tqdm import tqdm

        return tqdm(iterable, total=total, desc=desc, leave=False)
    return LineProgress(iterable, total=total, desc=desc)


class EpochLines:
    """A training stage's per-epoch metrics line: every epoch on a terminal or at --log-level DEBUG; otherwise
    the first, the last and at most one a minute between (the stage summary, `stages/train.json` and
    figures/training_curves.png keep every epoch)."""

    def __init__(self, stage: str, epochs: int, every_s: float = LOG_EVERY_S,
                 clock: Callable[[], float] = time.monotonic):
        self.stage, self.epochs, self.every_s, self.clock = stage, epochs, every_s, clock
        self.every_epoch = os.environ.get(PROGRESS_ENV) != "lines" or os.environ.get(LOG_LEVEL_ENV) == "DEBUG"
        self.last_printed: float | None = None

    def __call__(self, epoch: int, metrics: dict[str, float]) -> None:
        now = self.clock()
        due = self.last_printed is None or epoch == self.epochs or now - self.last_printed >= self.every_s
        if self.every_epoch or due:
            self.last_printed = now
            print(f"[{self.stage}] epoch {epoch}/{self.epochs}: " + ", ".join(
                f"{k} {v:.4f}" for k, v in metrics.items() if k != "epoch"), flush=True)
