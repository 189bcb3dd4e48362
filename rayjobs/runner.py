"""Run stages in order for an entry: announce each, connect to Ray before a stage that needs it, print its
summary. The stages themselves (crs_core/stages/) never print their summaries or start Ray."""

from __future__ import annotations

from collections.abc import Sequence

from crs_core.artifacts import RunDir
from crs_core.config import Config
from crs_core.stages import Stage, Summary, load_stage
from rayjobs.common import init_ray


def run_stages(config: Config, stages: Sequence[Stage | str], force: bool = False) -> dict[str, Summary]:
    """Each enabled stage (a Stage or the name of one), in order; returns {stage name: summary}."""
    run = RunDir(config.run_dir())
    summaries = {}
    for stage in stages:
        stage = load_stage(stage) if isinstance(stage, str) else stage
        if not stage.enabled(config):
            continue
        print(f"\n{stage.announce(config)}", flush=True)
        if stage.needs_ray:
            init_ray(config)
        summaries[stage.name] = stage.run(config, run, force=force)
        print(summaries[stage.name], flush=True)
    return summaries
