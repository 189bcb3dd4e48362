"""`python -m rayjobs.tune --dataset inspired` (= `crs tune`): sweep alpha x tau on Ray Tune, ASHA on valid
Recall@50, then evaluate the best configuration once on test.

Runs (or reuses) the augmentation stages first; the sweep itself never re-embeds or re-scores. Rerunning
the same command resumes an interrupted sweep. Watch it live in the Ray dashboard (Jobs / Actors) or with
`tensorboard --logdir runs/<dataset>/<run-id>/tune`.
"""

from __future__ import annotations

import argparse

from crs_core.artifacts import RunDir
from crs_core.evaluation import format_table
from crs_core.stages.evaluate import Evaluate
from rayjobs.augment import run_augment
from rayjobs.common import add_common_arguments, run_entry
from rayjobs.runner import run_stages


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crs tune", description=__doc__)
    add_common_arguments(parser, ray=True, force=True)
    return parser


def body(config, args) -> None:
    from crs_core.stages.tune import BEST_FILE, PLOT_FILE, TUNE_DIR, Tune, tuned_model_name

    run_augment(config, force=args.force)
    best = run_stages(config, [Tune(fresh=args.force)])["tune"]
    evaluated = run_stages(config, [Evaluate(models=[tuned_model_name(config)], figure=False)])["evaluate"]
    print(f"\n{config.dataset} test, best configuration (FNSCRS protocol; metrics in %)")
    print(format_table(list(evaluated["results"].items())))
    run = RunDir(config.run_dir())
    print(f"written: {run.path(TUNE_DIR, BEST_FILE)}, {run.path(TUNE_DIR, PLOT_FILE)}; "
          f"TensorBoard: tensorboard --logdir {best['experiment']}")


def main(argv: list[str] | None = None) -> int:
    return run_entry(body, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
