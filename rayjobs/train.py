"""`python -m rayjobs.train --dataset inspired` (= `crs train`): two-stage training on Ray Train.

Needs the synthetic labels of `crs augment`. Trains the backbone (`train.backbone`) once without
augmentation and once with it (stage 1 on synthetic labels, stage 2 with alpha * KL to stage 1), saves
both under models/, then evaluates every saved model (with the baselines, Popularity and EASE) on test.
"""

from __future__ import annotations

import argparse

from crs_core.artifacts import RunDir
from crs_core.evaluation import format_table
from crs_core.stages.evaluate import Evaluate, saved_models
from rayjobs.common import add_common_arguments, run_entry
from rayjobs.runner import run_stages


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crs train", description=__doc__)
    add_common_arguments(parser, ray=True, force=True)
    return parser


def body(config, args) -> None:
    run_stages(config, ["prepare", "baselines"])
    run_stages(config, ["train"], force=args.force)
    evaluated = run_stages(config, [Evaluate(models=saved_models(RunDir(config.run_dir())))])["evaluate"]
    print(f"\n{config.data.label or config.dataset} test (FNSCRS protocol; metrics in %)")
    print(format_table(list(evaluated["results"].items())))


def main(argv: list[str] | None = None) -> int:
    return run_entry(body, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
