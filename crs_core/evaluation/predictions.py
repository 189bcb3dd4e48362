"""Rankings produced outside this project (JSONL), scored under the same protocol.

Reading is strict: a ranking over the wrong id space, a duplicated line or a missing sample would
still produce a number, just a wrong one, so each of those is a `DataError` pointing at the line.
"""

from __future__ import annotations

import gzip
import json
import operator
import os
import tempfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from crs_core.errors import DataError
from crs_core.evaluation.protocol import TOP_N
from crs_core.schema import Catalog, Sample

_MISSING_SHOWN = 5


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _open_binary(path: Path, mode: str) -> IO[bytes]:
    return gzip.open(path, mode) if path.name.endswith(".gz") else open(path, mode)


def _parse_line(path: Path, number: int, raw: bytes) -> tuple[str, list[int]]:
    """One JSONL line -> (sample_id, ranking), with types checked but ids not yet resolved."""
    try:
        record = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(path, f"not valid JSON: {exc}", line=number) from None
    if not isinstance(record, dict):
        raise DataError(path, f"expected a JSON object, got {type(record).__name__}", line=number)
    for name in ("sample_id", "ranking"):
        if name not in record:
            raise DataError(path, "missing", line=number, field=name)
    sample_id, ranking = record["sample_id"], record["ranking"]
    if not isinstance(sample_id, str):
        raise DataError(path, f"must be a string, got {sample_id!r}", line=number, field="sample_id")
    if not isinstance(ranking, list):
        kind = type(ranking).__name__
        raise DataError(path, f"must be a list of item ids, got {kind}", line=number, field="ranking")
    bad = next((value for value in ranking if not _is_int(value)), None)
    if bad is not None:
        raise DataError(path, f"item ids must be integers, got {bad!r}", line=number, field="ranking")
    return sample_id, ranking


def _check_ranking(path: Path, number: int, ranking: list[int], catalog: Catalog) -> None:
    """The protocol ranks catalog items only, each once; anything else is a different protocol."""
    outside = next((item for item in ranking if item not in catalog), None)
    if outside is not None:
        raise DataError(path, f"item id {outside} is not in the catalog", line=number, field="ranking")
    seen: set[int] = set()
    for item in ranking:
        if item in seen:
            raise DataError(path, f"item id {item} appears twice", line=number, field="ranking")
        seen.add(item)


def read_predictions(
    path: str | os.PathLike, samples: Sequence[Sample], catalog: Catalog, top_n: int = TOP_N
) -> list[list[int]]:
    """Rankings from a JSONL (or .jsonl.gz) file, aligned with `samples` and cut to `top_n`.

    Samples without targets may be absent (they are not scored) and get an empty ranking.
    Blank lines are skipped; line numbers in errors are physical 1-based lines.
    """
    path = Path(path)
    position: dict[str, int] = {}
    for i, sample in enumerate(samples):
        if sample.sample_id in position:
            raise ValueError(f"samples contain sample_id {sample.sample_id!r} twice")
        position[sample.sample_id] = i
    rankings: list[list[int] | None] = [None] * len(samples)
    first_line: dict[str, int] = {}
    try:
        with _open_binary(path, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                if not raw.strip():
                    continue
                sample_id, ranking = _parse_line(path, number, raw)
                if sample_id not in position:
                    raise DataError(path, f"unknown sample {sample_id!r}", line=number, field="sample_id")
                if sample_id in first_line:
                    raise DataError(
                        path,
                        f"sample {sample_id!r} already ranked on line {first_line[sample_id]}",
                        line=number,
                        field="sample_id",
                    )
                first_line[sample_id] = number
                _check_ranking(path, number, ranking, catalog)
                rankings[position[sample_id]] = ranking[:top_n]
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise DataError(path, f"not a readable gzip file: {exc}") from None
    missing = [s.sample_id for s, r in zip(samples, rankings) if r is None and s.targets]
    if missing:
        shown = ", ".join(repr(sid) for sid in missing[:_MISSING_SHOWN])
        raise DataError(path, f"{len(missing)} samples with targets have no ranking (first: {shown})")
    return [ranking if ranking is not None else [] for ranking in rankings]


def write_predictions(
    path: str | os.PathLike, sample_ids: Sequence[str], rankings: Sequence[Sequence[int]]
) -> None:
    """Write what `read_predictions` reads; atomic, so a crash never leaves a truncated file."""
    if len(sample_ids) != len(rankings):
        raise ValueError(f"{len(sample_ids)} sample ids for {len(rankings)} rankings")
    if len(set(sample_ids)) != len(sample_ids):
        raise ValueError("sample_ids contain duplicates; read_predictions would reject the file")
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            if path.name.endswith(".gz"):
                # mtime=0 keeps .gz output byte-identical across runs.
                with gzip.GzipFile(fileobj=handle, mode="wb", mtime=0) as compressed:
                    _write_lines(compressed, sample_ids, rankings)
            else:
                _write_lines(handle, sample_ids, rankings)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide results from other users of a shared disk
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _write_lines(handle: IO[bytes], sample_ids: Sequence[str], rankings: Sequence[Sequence[int]]) -> None:
    for sample_id, ranking in zip(sample_ids, rankings):
        # operator.index accepts numpy ints but refuses floats instead of silently truncating them.
        record = {"sample_id": str(sample_id), "ranking": [operator.index(item) for item in ranking]}
        handle.write((json.dumps(record) + "\n").encode("utf-8"))
