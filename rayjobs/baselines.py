"""`python -m rayjobs.baselines --dataset inspired`: fit Popularity and EASE, save them in the run dir."""

from __future__ import annotations

import argparse

from crs_core.baselines import run_baselines
from crs_core.prepare import prepare
from rayjobs.common import add_common_arguments, run_entry


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crs baselines", description=__doc__)
    add_common_arguments(parser, force=True)
    return parser


def body(config, args) -> None:
    prepare(config)
    names = run_baselines(config, force=args.force)
    print(f"saved models: {', '.join(names)} in {config.run_dir() / 'models'}")


def main(argv: list[str] | None = None) -> int:
    return run_entry(body, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
