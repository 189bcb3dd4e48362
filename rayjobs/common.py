"""Arguments every entry shares, turning them into a resolved, checked and saved Config, and the local Ray.

Everything a user types or points at is checked here before a stage starts, so bad input ends in one
`error: ...` line (exit code 2) that names the file, the key or the argument, never in a traceback from
deep inside a stage. Secrets that slip into a config value are redacted in config.yaml, logs and errors.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from pathlib import Path

import yaml

from crs_core.config import Config, load_config, save_config
from crs_core.errors import ConfigError, CRSError
from crs_core.redaction import RedactingFilter, redact, redacted_copy
from crs_core.registry import dataset_config, known_datasets
from rayjobs.console import LOG_LEVELS, configure_console, configure_ray_output

CONFIG_FILE = "config.yaml"
MAX_CHANGES_SHOWN = 5
_VALIDATION_MESSAGE = re.compile(r"^[a-z_]+(\.[a-z_]+)*: ")  # Config.validate() starts with the key, no source
# Ray (2.60, Linux) rewrites `_node_ip_address="127.0.0.1"` to the machine's routable address and binds its
# gRPC servers and agents there; this variable, read when `ray` is imported, makes a local Ray keep loopback.
RAY_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"

log = logging.getLogger(__name__)


def add_common_arguments(parser: argparse.ArgumentParser, *, ray: bool = False, force: bool = False) -> None:
    """The shared flags; `--address` only for a verb that starts Ray (`ray`), `--force` only for one whose
    stages honour it (`force`): a flag a verb would ignore is refused by argparse instead."""
    parser.add_argument("--dataset", help="a dataset of the registry (" + ", ".join(known_datasets()) + "; "
                        "default: the dataset of --config or of the existing run, else inspired)")
    parser.add_argument("--config", action="append", default=[], type=Path,
                        help="YAML config file(s) layered over the dataset's own settings, in order")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one setting, e.g. --set baselines.ease_l2=200 (repeatable)")
    parser.add_argument("--run-id", help="run directory name under runs/<dataset>/")
    parser.add_argument("--runs-dir", help="root of run directories (default: runs)")
    parser.add_argument("--data-dir", help="dataset root (default: $CRS_DATA_DIR, else where `crs data fetch` stores)")
    parser.add_argument("--log-level", choices=LOG_LEVELS, default="INFO",
                        help="our own log lines from this level (default INFO); other libraries' from WARNING "
                             "(INFO with DEBUG, ERROR with ERROR)")
    if ray:
        parser.add_argument("--address", help="Ray cluster address ('auto', 'ray://host:10001'); default: local")
    else:
        parser.set_defaults(address=None)
    if force:
        parser.add_argument("--force", action="store_true", help="rerun stages even when their outputs are current")
    else:
        parser.set_defaults(force=False)


def load_layers(files: list, overrides: list[str], flags: dict) -> Config:
    """`load_config`, except that a value refused by the final validation (an out-of-range alpha, say)
    also names the file or `--set` that brought it in: the first layer after which validation fails."""
    try:
        return load_config(files, overrides, flags=flags)
    except ConfigError as exc:
        layers = [(str(path), files[: i + 1], [], {}) for i, path in enumerate(files)]
        layers += [("command line", files, [], flags)]
        layers += [(f"--set {text}", files, overrides[: j + 1], flags) for j, text in enumerate(overrides)]
        for source, layer_files, layer_overrides, layer_flags in layers:
            try:
                load_config(layer_files, layer_overrides, flags=layer_flags)
            except ConfigError as partial:
                refused_value = _VALIDATION_MESSAGE.match(str(exc)) and not str(exc).startswith(source)
                if str(partial) != str(exc) or not refused_value:
                    raise
                raise ConfigError(f"{source}: {exc}") from exc
        raise


def _dataset_named_in(files: list[Path], overrides: list[str]) -> str | None:
    """The dataset a --config file or a --set names (the last one wins), before any layering."""
    named = None
    for path in files:
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
        except yaml.YAMLError:
            continue  # load_config names the file and the YAML error
        if isinstance(data, dict) and isinstance(data.get("dataset"), str):
            named = data["dataset"]
    for text in overrides:
        key, _, value = text.partition("=")
        if key.strip() == "dataset" and value.strip():
            named = value.strip()
    return named


def _dataset_of_existing_run(runs_dir: Path, run_id: str) -> str | None:
    """With no dataset named anywhere, a command on an existing run uses the dataset that run recorded."""
    found = sorted(p.parent.parent.name for p in runs_dir.glob(f"*/{run_id}/{CONFIG_FILE}"))
    if len(found) > 1:
        raise ConfigError(f"runs {', '.join(str(runs_dir / d / run_id) for d in found)} all exist: "
                          f"pass --dataset ({' or '.join(found)})")
    return found[0] if found else None


def _changed_settings(before: dict, after: dict, prefix: str = "") -> list[str]:
    changes = []
    for key in after.keys() | before.keys():
        old, new = before.get(key), after.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            changes += _changed_settings(old, new, f"{prefix}{key}.")
        elif old != new:
            changes.append(f"{prefix}{key} {old!r} -> {new!r}")
    return sorted(changes)


def resolve_config(args: argparse.Namespace) -> Config:
    """The dataset's settings, then --config files, then CLI flags, then --set overrides.

    The dataset's settings are those its run recorded (runs/<dataset>/<run id>/config.yaml) when the run
    exists, else its registry file (crs_core/registry.py). With no --dataset, the dataset comes from the
    --config files, else from an existing run with this run id, else it is inspired. The run's config.yaml is
    written for a new run and rewritten only when the settings changed (the changes are printed)."""
    flags = {key: value for key, value in (
        ("run_id", args.run_id), ("runs_dir", args.runs_dir), ("data_dir", args.data_dir),
    ) if value is not None}
    if getattr(args, "address", None):
        flags["ray"] = {"address": args.address}
    named = _dataset_named_in(args.config, args.overrides)
    if args.dataset and named and named != args.dataset:
        raise CRSError(f"--dataset {args.dataset} conflicts with dataset: {named} in the config files")
    runs_dir = Path(flags.get("runs_dir", Config.runs_dir))
    run_id = flags.get("run_id", Config.run_id)
    dataset = args.dataset or named or _dataset_of_existing_run(runs_dir, run_id) or Config.dataset
    flags["dataset"] = dataset
    recorded = runs_dir / dataset / run_id / CONFIG_FILE
    first = recorded if recorded.is_file() else dataset_config(dataset)
    config = load_layers([first, *args.config], args.overrides, flags)
    redacted = redacted_copy(config)
    target = config.run_dir() / CONFIG_FILE
    if target.is_file():
        changes = _changed_settings(yaml.safe_load(target.read_text(encoding="utf-8")) or {}, redacted.to_dict())
        if not changes:
            return config
        shown = "; ".join(changes[:MAX_CHANGES_SHOWN]) + (f"; and {len(changes) - MAX_CHANGES_SHOWN} more"
                                                           if len(changes) > MAX_CHANGES_SHOWN else "")
        log.warning("%s: settings changed (%s); saved", target, shown)
    save_config(redacted, target)
    return config


def run_entry(main_body, parser: argparse.ArgumentParser, argv: list[str] | None) -> int:
    """Parse, run, and turn our own errors into one clear line and exit code 2 (no traceback)."""
    args = parser.parse_args(argv)
    configure_console(args.log_level)
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
    try:
        main_body(resolve_config(args), args)
    except CRSError as exc:
        return report_error(exc)
    return 0


def report_error(exc: CRSError) -> int:
    """One `error: ...` line on stderr (multi-line messages, e.g. YAML's, joined; secrets redacted); exit code 2."""
    one_line = " ".join(part.strip() for part in str(exc).splitlines() if part.strip())
    print(f"error: {redact(one_line)}", file=sys.stderr)
    return 2


def init_ray(config: Config) -> None:
    """Connect to `ray.address` (or to $RAY_ADDRESS, which `ray job submit` sets for its driver), or start a
    local Ray that listens on loopback only (dashboard, job server, gRPC servers and agents; checked by
    tests/test_reliability.py)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    address = config.ray.address or os.environ.get("RAY_ADDRESS")
    if not address:
        os.environ.setdefault(RAY_LOOPBACK_ENV, "0")  # effective only if `ray` is not imported yet (see below)
    import ray

    configure_ray_output()
    if ray.is_initialized():
        return
    if address:  # the cluster's own resources apply: num_cpus/object_store_memory are local-only settings
        ray.init(address=address)
        return
    ray.init(
        num_cpus=config.ray.num_cpus,
        object_store_memory=config.ray.object_store_memory,
        dashboard_host="127.0.0.1",
        _node_ip_address="127.0.0.1",
    )
    node_ip = ray.util.get_node_ip_address()
    if node_ip not in ("127.0.0.1", "::1"):
        log.warning("local Ray uses node address %s, not loopback: `ray` was imported before init_ray, so its "
                    "gRPC ports listen on that interface too (set %s=0 before importing ray)", node_ip,
                    RAY_LOOPBACK_ENV)
