"""`crs data fetch <dataset>`: download the dataset files the loaders read, pinned and verified.
`crs data check DIR`: check your own dataset (docs/data.md) and print its counts, or one file:line:field error.

Where the files go: --data-dir, else data_dir of the --config files, else $CRS_DATA_DIR, else the user's
cache (`$XDG_CACHE_HOME/crs-augment/data`, or `~/.cache/crs-augment/data`), where the other commands also
look when neither data_dir nor $CRS_DATA_DIR is set. Files already present are verified, not downloaded again.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from crs_core.config import DATA_DIR_ENV, DataConfig, load_config
from crs_core.data import jsonl
from crs_core.data.fetch import FetchOptions, default_data_dir, fetch_dataset
from crs_core.data.sources import load_manifest
from crs_core.errors import CRSError
from rayjobs.common import report_error


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crs data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    fetch = actions.add_parser("fetch", help="download and verify a dataset's files",
                               description="Download the files DATASET's loaders read, check their sha256, store "
                                           "them; files already present are only verified.")
    fetch.add_argument("dataset", metavar="DATASET", choices=sorted(load_manifest()),
                       help="one of: %(choices)s")
    fetch.add_argument("--data-dir", type=Path, help="where to store the files (default: see `crs data --help`)")
    fetch.add_argument("--config", action="append", default=[], type=Path,
                       help="YAML config file(s) whose data_dir is used when --data-dir is not given")
    fetch.add_argument("--base-url", help="fetch from this host instead of https://raw.githubusercontent.com and "
                                          "https://github.com (same paths: /<owner>/<repo>/<commit>/<path>)")
    fetch.add_argument("--force", action="store_true", help="download again and replace files already present")
    fetch.add_argument("--timeout", type=float, default=60.0, help="seconds per request (default: 60)")
    fetch.set_defaults(handler=run_fetch)
    check = actions.add_parser("check", help="check a dataset in the JSONL format of docs/data.md",
                               description="Read DIR's catalog and dialogues as `crs prepare` would and report "
                                           "the first problem (file, line, field) or the counts per split.")
    check.add_argument("directory", metavar="DIR", type=Path, help="the dataset's folder")
    check.add_argument("--catalog", default="catalog.jsonl", help="catalog file in DIR (default: %(default)s)")
    check.add_argument("--dialogues", help="dialogue file in DIR; '{split}' in it: one file per split (default: "
                                           "dialogues.jsonl, else {split}.jsonl)")
    defaults = DataConfig()
    check.add_argument("--valid-fraction", type=float, default=defaults.valid_fraction,
                       help="dialogues without a split: share for valid (default: %(default)s)")
    check.add_argument("--test-fraction", type=float, default=defaults.test_fraction,
                       help="dialogues without a split: share for test (default: %(default)s)")
    check.add_argument("--seed", type=int, default=defaults.valid_seed,
                       help="split shuffle seed (default: %(default)s)")
    check.set_defaults(handler=run_check)
    return parser


def target_data_dir(args: argparse.Namespace) -> Path:
    if args.data_dir:
        return args.data_dir.expanduser()
    configured = load_config(args.config).data_dir if args.config else None
    value = configured or os.environ.get(DATA_DIR_ENV)
    return Path(value).expanduser() if value else default_data_dir()


def run_fetch(args: argparse.Namespace) -> None:
    options = FetchOptions(base_url=args.base_url, force=args.force, timeout_s=args.timeout)
    fetch_dataset(args.dataset, target_data_dir(args), options)


def run_check(args: argparse.Namespace) -> None:
    root = args.directory.expanduser()
    dialogues = args.dialogues or jsonl.default_dialogues_name(root)
    dataset = jsonl.load_dataset(root, args.catalog, dialogues, args.valid_fraction, args.test_fraction, args.seed)
    print(jsonl.format_check(dataset))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except CRSError as exc:
        return report_error(exc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
