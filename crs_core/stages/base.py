"""The stage contract: what every stage of the method declares, and the one way a stage runs.

A stage names itself, says which run-directory files it reads (`inputs`) and writes (`outputs`) and which
settings decide its result (`settings`); `work` does the job and returns the figures worth recording. `run` is
the same for every stage: fingerprint the settings and the inputs' contents, reuse the outputs when the stage
record (`stages/<name>.json`) holds that fingerprint and every output exists, else work and record. A stage
whose `settings` is None has no fingerprint and works every time (evaluation is cheap; the LLM stages read their
answers from a cache; Ray Tune restores its own trials).

The result is a `Summary`: the recorded figures, whether they were reused, the wall time, and the lines the
stage's `describe` makes of them, so a summary prints itself and no caller formats a stage it does not own.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from crs_core.artifacts import RunDir, fingerprint
from crs_core.config import Config


def shown(value: float | None, spec: str) -> str:
    """A figure as a stage prints it: `format(value, spec)`, or "-" when the stage could not measure it."""
    return "-" if value is None else format(value, spec)


@dataclass(frozen=True)
class Summary(Mapping[str, Any]):
    """One stage run: its recorded figures (read like a mapping), whether the outputs were reused, the wall
    time, and the lines its stage made of the figures; `str()` is what the CLI prints after the stage."""

    stage: str
    figures: Mapping[str, Any]
    lines: tuple[str, ...]
    reused: bool = False
    wall_s: float = 0.0

    def __getitem__(self, key: str) -> Any:
        return self.figures[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.figures)

    def __len__(self) -> int:
        return len(self.figures)

    def header(self) -> str:
        """`-- stage [12.3s]`, or `-- stage (unchanged, reused) [0.1s]`."""
        return f"-- {self.stage}{' (unchanged, reused)' if self.reused else ''} [{self.wall_s}s]"

    def __str__(self) -> str:
        return "\n".join([self.header(), *self.lines])


class Stage(ABC):
    """One step of the method; subclasses set `name` and `about` and implement `work`."""

    name: ClassVar[str]
    about: ClassVar[str]  # what the stage does, formatted with `config` and the stage itself (`stage`)
    needs_ray: ClassVar[bool] = False  # the runner connects to Ray first

    def inputs(self, config: Config, run: RunDir) -> list[Path]:
        """Files whose contents fingerprint the stage (a changed input reruns it)."""
        return []

    def outputs(self, config: Config) -> list[str]:
        """Run-directory paths the stage writes; all must exist for its record to count."""
        return []

    def settings(self, config: Config, run: RunDir) -> dict | None:
        """The settings that decide the outputs (None: no fingerprint, the stage works every time)."""
        return None

    def enabled(self, config: Config) -> bool:
        """False for an opt-in stage the config leaves off; the pipeline skips it."""
        return True

    def reusable(self, figures: Mapping[str, Any]) -> bool:
        """Whether a current record may be reused (a stage may refuse, e.g. one with failures to retry)."""
        return True

    @abstractmethod
    def work(self, config: Config, run: RunDir) -> dict:
        """Write the outputs; return the figures to record (JSON-serialisable)."""

    def describe(self, figures: Mapping[str, Any], config: Config) -> list[str]:
        """The lines printed after the stage."""
        return []

    def announce(self, config: Config) -> str:
        """`== name: what it does ...`, printed before a stage that may take a while."""
        return f"== {self.name}: {self.about.format(config=config, stage=self)} ..."

    def fingerprint(self, config: Config, run: RunDir) -> str | None:
        settings = self.settings(config, run)
        if settings is None:
            return None
        return fingerprint(settings, self.inputs(config, run))

    def summarize(self, config: Config, figures: Mapping[str, Any], reused: bool = False,
                  wall_s: float = 0.0) -> Summary:
        return Summary(self.name, figures, tuple(self.describe(figures, config)), reused, wall_s)

    def record(self, config: Config, run: RunDir, fp: str | None, figures: dict) -> None:
        """Mark the stage done with these figures (also for work done outside `run`, e.g. a Batch API import)."""
        run.mark_done(self.name, fp, self.outputs(config), figures)

    def run(self, config: Config, run: RunDir, force: bool = False) -> Summary:
        """Reuse the outputs when current, else work and record; the one way every stage runs."""
        start = time.perf_counter()
        fp = self.fingerprint(config, run)
        figures = None if fp is None or force else run.current_summary(self.name, fp, self.outputs(config))
        if figures is not None and self.reusable(figures):
            return self.summarize(config, figures, True, round(time.perf_counter() - start, 1))
        figures = self.work(config, run)
        self.record(config, run, fp, figures)
        return self.summarize(config, figures, False, round(time.perf_counter() - start, 1))
