"""`crs <command> ...`: the front door to the stage entries in rayjobs/."""

from __future__ import annotations

import sys

from crs_core import __version__
from rayjobs import augment, baselines, data, evaluate, pipeline, prepare, simulate, teach, train, tune

COMMANDS = {
    "data": (data.main, "fetch a dataset's files from their pinned public sources, verified"),
    "prepare": (prepare.main, "build items.parquet and samples/*.parquet, print counts"),
    "augment": (augment.main, "embed, retrieve, teach, distill, score, synthesize: the synthetic labels"),
    "teach": (teach.main, "the teach stage alone, or its OpenAI Batch API export/import"),
    "baselines": (baselines.main, "fit and save Popularity and EASE"),
    "train": (train.main, "two-stage training on Ray Train, with and without augmentation"),
    "evaluate": (evaluate.main, "FNSCRS evaluation of saved models and prediction files"),
    "tune": (tune.main, "Ray Tune sweep of alpha x tau (ASHA), best config evaluated on test"),
    "simulate": (simulate.main, "LLM user simulator (iEvaLM-style) and the zero-shot LLM recommender"),
    "run": (pipeline.main, "every stage in order, then the results table"),
}


def usage() -> str:
    lines = ["usage: crs <command> [options]   (crs <command> --help for its options; crs --version)", "",
             "commands:"]
    lines += [f"  {name:<10} {text}" for name, (_, text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        print(f"crs-augment {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"error: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        return 2
    return COMMANDS[command][0](rest)


if __name__ == "__main__":
    raise SystemExit(main())
