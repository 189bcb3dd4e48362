"""`python -m rayjobs.augment --dataset inspired` (= `crs augment`): embed, retrieve, teach, score, synthesize.

Each stage resumes from its artifacts: a rerun with unchanged inputs and settings skips it, and changing
only `synthesize.threshold` re-filters the stored scores without re-embedding or re-scoring.
"""

from __future__ import annotations

import argparse
import time

from crs_core.artifacts import RunDir
from crs_core.errors import CRSError
from crs_core.prepare import prepare
from rayjobs.common import add_common_arguments, init_ray, run_entry
from rayjobs.report import print_stage_start, print_stage_summary

STAGES = ("embed", "retrieve", "teach", "score", "synthesize")


def stage_functions() -> dict:
    """Imported lazily: torch, transformers and faiss load only when a stage actually runs."""
    from crs_core.embed import run_embed
    from crs_core.retrieval import run_retrieve
    from crs_core.score import run_score
    from crs_core.synthesize import run_synthesize
    from crs_core.teach import run_teach

    return {"embed": run_embed, "retrieve": run_retrieve, "teach": run_teach, "score": run_score,
            "synthesize": run_synthesize}


def run_augment(config, force: bool = False, stages: tuple[str, ...] = STAGES) -> dict[str, dict]:
    prepare(config)
    init_ray(config)
    run = RunDir(config.run_dir())
    functions = stage_functions()
    summaries = {}
    for stage in stages:
        print_stage_start(stage, config)
        start = time.perf_counter()
        summaries[stage] = functions[stage](config, run, force=force)
        summaries[stage].setdefault("wall_s", round(time.perf_counter() - start, 1))
        print_stage_summary(stage, summaries[stage], config)
    return summaries


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crs augment", description=__doc__)
    add_common_arguments(parser, ray=True, force=True)
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}")
    return parser


def body(config, args) -> None:
    stages = tuple(s for s in args.stages.split(",") if s)
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise CRSError(f"--stages: unknown stage(s) {', '.join(unknown)}; known: {', '.join(STAGES)}")
    run_augment(config, force=args.force, stages=stages)


def main(argv: list[str] | None = None) -> int:
    return run_entry(body, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
