"""`python -m rayjobs.evaluate`: score saved models and outside prediction files with the FNSCRS protocol.

A predictions file is JSONL, one line per sample of the split: {"sample_id": ..., "ranking": [item ids]}
(best first, catalog ids from items.parquet; sample ids from samples/<split>.parquet).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from crs_core.artifacts import RunDir
from crs_core.errors import CRSError
from crs_core.evaluation import format_table
from crs_core.stages.evaluate import Evaluate, saved_models
from rayjobs.common import add_common_arguments, run_entry


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crs evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    parser.add_argument("--models", help="comma-separated saved model names (default: every saved model)")
    parser.add_argument("--predictions", action="append", default=[], metavar="NAME=FILE",
                        help="an outside model's rankings to score, e.g. --predictions unicrs=preds.jsonl")
    parser.add_argument("--split", default="test", choices=("valid", "test"))
    return parser


def parse_predictions(values: list[str]) -> dict[str, Path]:
    parsed = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise CRSError(f"--predictions {value!r}: expected NAME=FILE")
        parsed[name] = Path(path)
    return parsed


def body(config, args) -> None:
    run = RunDir(config.run_dir())
    models = args.models.split(",") if args.models else saved_models(run)
    stage = Evaluate(models=models, predictions=parse_predictions(args.predictions), split=args.split)
    summary = stage.run(config, run)
    print(f"{config.dataset} {args.split} (FNSCRS protocol; metrics in %)")
    print(format_table(list(summary["results"].items())))
    print("\n".join(summary.lines))


def main(argv: list[str] | None = None) -> int:
    return run_entry(body, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
