"""`python -m rayjobs.augment --dataset inspired` (= `crs augment`): embed, retrieve, teach, distill, score,
synthesize (after prepare).

Each stage resumes from its artifacts: a rerun with unchanged inputs and settings skips it, and changing
only `synthesize.threshold` re-filters the stored scores without re-embedding or re-scoring.
"""

from __future__ import annotations

import argparse

from crs_core.errors import CRSError
from crs_core.stages import AUGMENT
from rayjobs.common import add_common_arguments, run_entry
from rayjobs.runner import run_stages


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crs augment", description=__doc__)
    add_common_arguments(parser, ray=True, force=True)
    parser.add_argument("--stages", default=",".join(AUGMENT), help=f"comma-separated subset of {','.join(AUGMENT)}")
    return parser


def run_augment(config, force: bool = False, stages=AUGMENT) -> dict:
    """prepare (reused when current), then the augmentation stages named; {stage: summary}."""
    return run_stages(config, ["prepare"]) | run_stages(config, stages, force=force)


def body(config, args) -> None:
    stages = [s for s in args.stages.split(",") if s]
    unknown = [s for s in stages if s not in AUGMENT]
    if unknown:
        raise CRSError(f"--stages: unknown stage(s) {', '.join(unknown)}; known: {', '.join(AUGMENT)}")
    run_augment(config, force=args.force, stages=stages)


def main(argv: list[str] | None = None) -> int:
    return run_entry(body, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
