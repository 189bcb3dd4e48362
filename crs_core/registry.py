"""The dataset registry: a dataset is one YAML config file, found by name.

`--dataset NAME` layers `NAME.yaml` under every other setting. The file is looked up in the folders of
$CRS_CONFIG_PATH (your own datasets; `:`-separated, first match wins) and then in the configs shipped inside
the package (INSPIRED and ReDial), so a command behaves the same from any directory and from an installed
wheel. The file's `data:` section says how to read the dataset (`format`) and how to name it in tables
(`label`, `note`, the paper's label counts); docs/data.md documents it.
"""

from __future__ import annotations

import os
import re
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from crs_core.errors import ConfigError

CONFIG_PATH_ENV = "CRS_CONFIG_PATH"
PACKAGED_CONFIGS = "configs"
DATASET_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


def packaged_configs() -> Traversable:
    return resources.files("crs_core") / PACKAGED_CONFIGS


def _user_dirs() -> list[Path]:
    return [Path(p).expanduser() for p in os.environ.get(CONFIG_PATH_ENV, "").split(os.pathsep) if p]


def known_datasets() -> list[str]:
    """Every dataset name the registry can resolve: user folders first, then the packaged ones."""
    names: dict[str, None] = {}
    for folder in _user_dirs():
        if folder.is_dir():
            names.update((p.stem, None) for p in sorted(folder.glob("*.yaml")))
    names.update((p.name[: -len(".yaml")], None) for p in sorted(packaged_configs().iterdir(), key=lambda p: p.name)
                 if p.name.endswith(".yaml"))
    return list(names)


def dataset_config(name: str) -> Traversable:
    """The config file that defines dataset `name`; a ConfigError lists the known names otherwise."""
    if not DATASET_NAME.match(name):
        raise ConfigError(f"dataset: {name!r} is not a valid name (lower-case letters, digits, '_', '-', '.')")
    for folder in _user_dirs():
        if (folder / f"{name}.yaml").is_file():
            return folder / f"{name}.yaml"
    packaged = packaged_configs() / f"{name}.yaml"
    if packaged.is_file():
        return packaged
    raise ConfigError(f"dataset: no config file {name}.yaml in ${CONFIG_PATH_ENV} or the packaged configs "
                      f"(known: {', '.join(known_datasets())}); write one (docs/data.md) or pass --config FILE")


def packaged_file(name: str) -> Path:
    """A packaged config file by name (e.g. `deepspeed_zero2.json`), as a real path on disk."""
    path = packaged_configs() / name
    if not path.is_file():
        raise ConfigError(f"no packaged config {name!r} (known: "
                          f"{', '.join(sorted(p.name for p in packaged_configs().iterdir()))})")
    return Path(str(path))
