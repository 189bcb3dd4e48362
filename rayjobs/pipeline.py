"""`python -m rayjobs.pipeline --dataset inspired` (= `crs run`): every stage in order, then the table.

Each stage reuses its outputs when inputs and settings are unchanged, so a rerun resumes where it stopped.
"""

from __future__ import annotations

import argparse

from crs_core.baselines import run_baselines
from crs_core.evaluate import run_evaluate
from crs_core.evaluation import format_table
from crs_core.prepare import format_summary, prepare
from rayjobs.common import add_common_arguments, run_entry


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crs run", description=__doc__)
    add_common_arguments(parser)
    return parser


def body(config, args) -> None:
    print(format_summary(prepare(config, force=args.force)))
    models = run_baselines(config, force=args.force)
    results = run_evaluate(config, models=models, split="test")
    label = "ReDial-PARTIAL" if config.dataset == "redial" else "INSPIRED"
    print(f"\n{label} test (FNSCRS protocol; metrics in %)")
    print(format_table(list(results.items())))
    print(f"run directory: {config.run_dir()}")


def main(argv: list[str] | None = None) -> int:
    return run_entry(body, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
