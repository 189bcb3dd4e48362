"""`python -m rayjobs.prepare --dataset inspired`: build items and samples in the run directory."""

from __future__ import annotations

import argparse

from rayjobs.common import add_common_arguments, run_entry
from rayjobs.runner import run_stages


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crs prepare", description=__doc__)
    add_common_arguments(parser, force=True)
    return parser


def body(config, args) -> None:
    run_stages(config, ["prepare"], force=args.force)
    print(f"run directory: {config.run_dir()}")


def main(argv: list[str] | None = None) -> int:
    return run_entry(body, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
