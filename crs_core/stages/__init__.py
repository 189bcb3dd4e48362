"""The method's stages, one module each, run in the order of `PIPELINE` (docs/architecture.md).

Every module here defines one `Stage` (crs_core/stages/base.py) named `STAGE`; everything outside this
package is a library the stages use. Adding a stage is one module here and one line in `PIPELINE`. Modules
are imported when their stage is asked for, so torch, transformers and faiss load only for stages that run.
"""

from __future__ import annotations

import importlib

from crs_core.artifacts import RunDir
from crs_core.config import Config
from crs_core.stages.base import Stage, Summary

PIPELINE = (
    "prepare",
    "embed",
    "retrieve",
    "teach",
    "distill",
    "score",
    "synthesize",
    "baselines",
    "train",
    "evaluate",
    "zero_shot",
    "simulate",
)
# The augmentation stages (`crs augment`): from the prepared data to synthetic labels.
AUGMENT = PIPELINE[PIPELINE.index("embed"): PIPELINE.index("synthesize") + 1]
# Stages run on request only, not by `crs run`.
ON_REQUEST = ("tune",)


def run_stage(name: str, config: Config, force: bool = False) -> Summary:
    """Run one stage in the config's run directory (scripts, notebooks, tests); `crs` entries print too."""
    return load_stage(name).run(config, RunDir(config.run_dir()), force=force)


def load_stage(name: str) -> Stage:
    """The `STAGE` of crs_core/stages/<name>.py."""
    if name not in PIPELINE + ON_REQUEST:
        raise KeyError(f"unknown stage {name!r}; known: {', '.join(PIPELINE + ON_REQUEST)}")
    return importlib.import_module(f"crs_core.stages.{name}").STAGE


__all__ = ["AUGMENT", "ON_REQUEST", "PIPELINE", "Stage", "Summary", "load_stage", "run_stage"]
