"""Run-directory artifacts: Parquet with a declared schema, written atomically, with stage fingerprints.

A stage's outputs appear under their final names only once complete (temp name + os.replace), and a
stage record (`stages/<stage>.json`) holds the fingerprint of its inputs and config so a rerun with the
same inputs is skipped and any change reruns it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from crs_core.errors import DataError

FILE_MODE = 0o644  # mkstemp creates 0600 files; artifacts are meant to be shared on a cluster filesystem


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.chmod(tmp, FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield a fresh temp directory beside `path`; on success it replaces `path` whole.

    An existing `path` is moved aside first (a rename cannot overwrite a non-empty directory) and
    deleted only once the new one is in place, so a reader sees the old directory or the new one,
    never half of one. On failure the temp directory is removed and `path` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")
    tmp.mkdir()
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def write_table(path: Path, table: pa.Table, schema: pa.Schema) -> None:
    """Write `table` (cast to `schema`, so a wrong column fails here, not in the next stage) atomically."""
    table = table.select(schema.names).cast(schema)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, FILE_MODE)
    try:
        pq.write_table(table, tmp)
        with open(tmp, "rb") as handle:  # on disk before the rename makes it visible (a crash keeps the old file)
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_table(path: Path, schema: pa.Schema) -> pa.Table:
    """Read a Parquet artifact and check it has every declared column with the declared type."""
    if not path.exists():
        raise DataError(path, "artifact not found: run the stage that writes it first")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(path, f"not a readable Parquet file: {exc}") from exc
    for fld in schema:
        if fld.name not in table.schema.names:
            raise DataError(path, "missing column", field=fld.name)
        actual = table.schema.field(fld.name).type
        if actual != fld.type:
            raise DataError(path, f"column type {actual}, expected {fld.type}", field=fld.name)
    return table.select(schema.names)


def file_digest(path: Path) -> str:
    if not path.exists():
        raise DataError(path, "artifact not found: run the stage that writes it first")
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fingerprint(config: Any, inputs: Iterable[Path] = ()) -> str:
    """Hash of a stage's config section and the contents of its input files."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for path in sorted(Path(p) for p in inputs):
        digest.update(str(path.name).encode())
        digest.update(file_digest(path).encode())
    return digest.hexdigest()[:16]


class RunDir:
    """`runs/<dataset>/<run-id>/`: where every stage of one run reads and writes."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    def stage_record(self, stage: str) -> Path:
        return self.path("stages", f"{stage}.json")

    def current_summary(self, stage: str, fp: str, outputs: Iterable[str]) -> dict | None:
        """The recorded summary when the stage already ran with this fingerprint and all its outputs exist."""
        record = self.stage_record(stage)
        if not record.exists():
            return None
        saved = json.loads(record.read_text())
        current = saved.get("fingerprint") == fp and all(self.path(o).exists() for o in outputs)
        return saved["summary"] if current else None

    def is_current(self, stage: str, fp: str, outputs: Iterable[str]) -> bool:
        """True when the stage already ran with this fingerprint and all its outputs exist."""
        return self.current_summary(stage, fp, outputs) is not None

    def recorded_fingerprint(self, stage: str) -> str:
        """The fingerprint `stage` last ran with: a later stage's setting when that stage's product (a trained
        model, say) is a folder of files rather than one input file."""
        record = self.stage_record(stage)
        if not record.exists():
            raise DataError(record, f"stage {stage} has not run here yet: run it first")
        return json.loads(record.read_text())["fingerprint"]

    def mark_done(self, stage: str, fp: str | None, outputs: Iterable[str], summary: dict) -> None:
        write_json(self.stage_record(stage), {"fingerprint": fp, "outputs": list(outputs), "summary": summary})

    def summary(self, stage: str) -> dict:
        return json.loads(self.stage_record(stage).read_text())["summary"]
