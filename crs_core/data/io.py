"""Reading raw files so that every failure names the file, the line and the field."""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from crs_core.errors import DataError


def open_text(path: Path):
    """Open a plain or gzip text file (by suffix) as UTF-8."""
    if not path.exists():
        raise DataError(path, "file not found (check CRS_DATA_DIR / data_dir)")
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open("r", encoding="utf-8")


def iter_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    """Yield (1-based line number, parsed object) for each non-blank line."""
    lineno = 0
    try:
        with open_text(path) as handle:
            for lineno, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    yield lineno, json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(path, f"malformed JSON: {exc.msg} (column {exc.colno})", line=lineno) from exc
    except (EOFError, gzip.BadGzipFile, zlib.error, UnicodeDecodeError) as exc:
        where = f"after line {lineno}" if lineno else "before its first line"
        raise DataError(path, f"unreadable or truncated file {where}: {exc}") from exc


def load_json(path: Path) -> Any:
    """Parse a whole JSON file (plain or .gz)."""
    try:
        with open_text(path) as handle:
            return json.load(handle)
    except json.JSONDecodeError as exc:
        raise DataError(path, f"malformed JSON: {exc.msg} (column {exc.colno})", line=exc.lineno) from exc
    except (EOFError, gzip.BadGzipFile, zlib.error, UnicodeDecodeError) as exc:
        raise DataError(path, f"unreadable or truncated file: {exc}") from exc


def require(record: Any, key: str, kind: type | tuple[type, ...], path: Path, line: int, prefix: str = "") -> Any:
    """Return record[key], raising a DataError naming the field when absent or of the wrong type."""
    name = f"{prefix}{key}"
    if not isinstance(record, dict):
        raise DataError(path, f"expected an object, got {type(record).__name__}", line=line,
                        field=prefix.rstrip(".") or None)
    if key not in record:
        raise DataError(path, "missing field", line=line, field=name)
    value = record[key]
    if not isinstance(value, kind):
        expected = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise DataError(path, f"expected {expected}, got {type(value).__name__}", line=line, field=name)
    return value
