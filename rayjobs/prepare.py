"""`python -m rayjobs.prepare --dataset inspired`: build items and samples in the run directory."""

from __future__ import annotations

import argparse

from crs_core.prepare import format_summary, prepare
from rayjobs.common import add_common_arguments, run_entry


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crs prepare", description=__doc__)
    add_common_arguments(parser, force=True)
    return parser


def body(config, args) -> None:
    summary = prepare(config, force=args.force)
    print(format_summary(summary))
    print(f"run directory: {config.run_dir()}" + (" (unchanged, reused)" if summary["skipped"] else ""))


def main(argv: list[str] | None = None) -> int:
    return run_entry(body, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
