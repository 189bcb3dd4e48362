"""Arguments every entry shares, and turning them into a resolved, saved Config."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from crs_core.config import Config, load_config, save_config
from crs_core.errors import CRSError

DEFAULT_CONFIG_DIR = Path("configs")


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", choices=("inspired", "redial"), help="dataset (default from config: inspired)")
    parser.add_argument("--config", action="append", default=[], type=Path,
                        help="YAML config file(s), applied in order (default: configs/<dataset>.yaml if present)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one setting, e.g. --set baselines.ease_l2=200 (repeatable)")
    parser.add_argument("--run-id", help="run directory name under runs/<dataset>/")
    parser.add_argument("--runs-dir", help="root of run directories (default: runs)")
    parser.add_argument("--data-dir", help="dataset root (default: $CRS_DATA_DIR)")
    parser.add_argument("--address", help="Ray cluster address ('auto', 'ray://host:10001'); default: local")
    parser.add_argument("--force", action="store_true", help="rerun stages even when their outputs are current")


def resolve_config(args: argparse.Namespace) -> Config:
    """Defaults < CLI flags < configs/<dataset>.yaml or --config files < --set overrides; saved in the run dir."""
    base = {key: value for key, value in (
        ("dataset", args.dataset), ("run_id", args.run_id), ("runs_dir", args.runs_dir), ("data_dir", args.data_dir),
    ) if value is not None}
    if args.address:
        base["ray"] = {"address": args.address}
    files = list(args.config)
    if not files and args.dataset and (DEFAULT_CONFIG_DIR / f"{args.dataset}.yaml").exists():
        files = [DEFAULT_CONFIG_DIR / f"{args.dataset}.yaml"]
    config = load_config(files, args.overrides, base=base)
    if args.dataset and config.dataset != args.dataset:
        raise CRSError(f"--dataset {args.dataset} conflicts with dataset: {config.dataset} in the config files")
    save_config(config, config.run_dir() / "config.yaml")
    return config


def run_entry(main_body, parser: argparse.ArgumentParser, argv: list[str] | None) -> int:
    """Parse, run, and turn our own errors into one clear line and exit code 2 (no traceback)."""
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        main_body(resolve_config(args), args)
    except CRSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def init_ray(config: Config) -> None:
    """Connect to `ray.address`, or start a local Ray whose dashboard listens on loopback only."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():
        return
    if config.ray.address:
        ray.init(address=config.ray.address)
        return
    ray.init(
        num_cpus=config.ray.num_cpus,
        object_store_memory=config.ray.object_store_memory,
        dashboard_host="127.0.0.1",
        _node_ip_address="127.0.0.1",
    )
