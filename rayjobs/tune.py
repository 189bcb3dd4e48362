"""`python -m rayjobs.tune --dataset inspired` (= `crs tune`): sweep alpha x tau on Ray Tune, ASHA on valid
Recall@50, then evaluate the best configuration once on test.

Runs (or reuses) the augmentation stages first; the sweep itself never re-embeds or re-scores. Rerunning
the same command resumes an interrupted sweep. Watch it live in the Ray dashboard (Jobs / Actors) or with
`tensorboard --logdir runs/<dataset>/<run-id>/tune`.
"""

from __future__ import annotations

import argparse
import time

from crs_core.artifacts import RunDir
from crs_core.evaluate import run_evaluate
from crs_core.evaluation import format_table
from rayjobs.augment import run_augment
from rayjobs.common import add_common_arguments, init_ray, run_entry
from rayjobs.report import print_stage_start, stage_end_header


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crs tune", description=__doc__)
    add_common_arguments(parser, ray=True, force=True)
    return parser


def format_sweep(best: dict) -> list[str]:
    lines = [f"{'alpha':>6} {'tau':>5} {'lr':>8} {'epochs':>6} {'best':>5} {'valid R@50':>10} {'valid R@10':>10}"]
    for r in best["trials"]:
        lines.append(f"{r['alpha']:>6g} {r['tau']:>5g} {r['learning_rate']:>8.0e} {r['epochs_run']:>6} "
                     f"{r['best_epoch']:>5} {100 * r['valid_recall@50']:>9.2f}% {100 * r['valid_recall@10']:>9.2f}%")
    exp = best["expansion"]
    lines.append(f"best: alpha {best['alpha']:g}, tau {best['tau']:g}, lr {best['learning_rate']:g} "
                 f"(valid R@50 {100 * best['valid_recall@50']:.2f}% at epoch {best['best_epoch']}; "
                 f"labels {exp['original_labels']:,} -> {exp['synthetic_labels']:,} at this tau)")
    return lines


def body(config, args) -> None:
    from crs_core.tune import BEST_FILE, PLOT_FILE, TUNE_DIR, run_tune, tuned_model_name

    run_augment(config, force=args.force)
    init_ray(config)
    run = RunDir(config.run_dir())
    print_stage_start("tune", config)
    start = time.perf_counter()
    best = run_tune(config, run, force=args.force)
    print(stage_end_header("tune", round(time.perf_counter() - start, 1))
          + " (stage 2 per trial; trials stopped early by ASHA ran fewer epochs)")
    print("\n".join(format_sweep(best)))
    results = run_evaluate(config, models=[tuned_model_name(config)], split="test")
    print(f"\n{config.dataset} test, best configuration (FNSCRS protocol; metrics in %)")
    print(format_table(list(results.items())))
    print(f"written: {run.path(TUNE_DIR, BEST_FILE)}, {run.path(TUNE_DIR, PLOT_FILE)}; "
          f"TensorBoard: tensorboard --logdir {best['experiment']}")


def main(argv: list[str] | None = None) -> int:
    return run_entry(body, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
