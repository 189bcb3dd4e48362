"""Errors that point at the exact place of bad input."""

from __future__ import annotations


class CRSError(Exception):
    """Base class for every error this project raises on purpose."""


class DataError(CRSError):
    """Bad input data: names the file, the 1-based line (or record) and the field."""

    def __init__(self, path, message: str, line: int | None = None, field: str | None = None):
        self.path = str(path)
        self.line = line
        self.field = field
        where = self.path
        if line is not None:
            where += f", line {line}"
        if field is not None:
            where += f", field '{field}'"
        super().__init__(f"{where}: {message}")


class ConfigError(CRSError):
    """Bad configuration: names the key and, when known, the file."""
