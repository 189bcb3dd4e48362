"""`python -m rayjobs.train --dataset inspired` (= `crs train`): two-stage training on Ray Train.

Needs the synthetic labels of `crs augment`. Trains the backbone (`train.backbone`) once without
augmentation and once with it (stage 1 on synthetic labels, stage 2 with alpha * KL to stage 1), saves
both under models/, then evaluates them with the baselines (Popularity, EASE) on the test split.
"""

from __future__ import annotations

import argparse
import time

from crs_core.artifacts import RunDir
from crs_core.baselines import run_baselines
from crs_core.evaluate import results_figure, run_evaluate
from crs_core.evaluation import format_table
from crs_core.prepare import prepare
from rayjobs.common import add_common_arguments, init_ray, run_entry
from rayjobs.report import format_train, print_stage_start, stage_end_header


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crs train", description=__doc__)
    add_common_arguments(parser, ray=True, force=True)
    return parser


def body(config, args) -> None:
    from crs_core.two_stage import run_two_stage

    prepare(config)
    run_baselines(config)
    print_stage_start("train", config)
    start = time.perf_counter()
    init_ray(config)
    summary = run_two_stage(config, RunDir(config.run_dir()), force=args.force)
    print(stage_end_header("train", round(time.perf_counter() - start, 1), bool(summary.get("skipped"))))
    print("\n".join(format_train(summary)))
    results = run_evaluate(config, split="test", figure=True)
    print(f"\n{config.data.label or config.dataset} test (FNSCRS protocol; metrics in %)")
    print(format_table(list(results.items())))
    print(f"figure: {config.run_dir() / results_figure('test')} (removed variant, 95% bootstrap CI over test pairs)")


def main(argv: list[str] | None = None) -> int:
    return run_entry(body, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
