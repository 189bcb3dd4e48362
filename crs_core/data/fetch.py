"""`crs data fetch <dataset>`: download the files the loaders read, verified, into a data directory.

Every file comes from its public source pinned to a commit (see sources.py / sources.json) and is checked
against the sha256 of the upstream bytes before anything is stored. A file appears under its final name only
when complete (temp file in the same folder, then os.replace): a cut or corrupted download leaves nothing
behind. Files already present are verified by the digest of their stored content and never downloaded again;
one that fails that check is an error (delete it, or rerun with force=True / --force to download it afresh).
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from crs_core.artifacts import atomic_write_bytes
from crs_core.data.sources import (
    DataFile,
    Download,
    build_kascrs_item_map,
    dataset_files,
    kascrs_item_tokens,
    load_plain_pickle,
    remove_stray_byte,
)
from crs_core.errors import DataError

USER_AGENT = "crs-augment-data-fetch"
CHUNK = 1 << 16
RETRYABLE_HTTP = (408, 429, 500, 502, 503, 504)


def default_data_dir() -> Path:
    """Where fetched data goes when neither data_dir nor $CRS_DATA_DIR says otherwise: the user's cache."""
    cache = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(cache) if os.path.isabs(cache) else Path.home() / ".cache"  # XDG: relative values are ignored
    return root / "crs-augment" / "data"


@dataclass(frozen=True)
class FetchOptions:
    base_url: str | None = None  # replaces https://raw.githubusercontent.com and https://github.com
    force: bool = False  # download and replace files that are already present
    timeout_s: float = 60.0
    attempts: int = 3  # per URL, for connection errors, cut bodies and 5xx answers
    retry_wait_s: float = 1.0  # doubled after each failed attempt


@dataclass(frozen=True)
class FileResult:
    path: str
    status: str  # "fetched" | "present"
    detail: str


def stored_content_digest(path: Path) -> str | None:
    """sha256 of a stored file's content (decompressed when .gz); None when a .gz file does not decompress."""
    digest = hashlib.sha256()
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")) as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    except (OSError, EOFError, zlib.error):
        return None
    return digest.hexdigest()


def _get_once(url: str, handle, timeout_s: float) -> None:
    """Stream one response body into `handle`; a body shorter than its Content-Length is an error
    (urllib itself returns a short body silently)."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        expected = response.headers.get("Content-Length")
        received = 0
        for chunk in iter(lambda: response.read(CHUNK), b""):
            handle.write(chunk)
            received += len(chunk)
        if expected is not None and received != int(expected):
            raise http.client.IncompleteRead(b"", int(expected) - received)


def download(source: Download, dest_dir: Path, target: str, options: FetchOptions) -> bytes:
    """The verified upstream bytes of `source`, downloaded through a temp file in `dest_dir` (removed after)."""
    url = source.url(options.base_url)
    fd, tmp = tempfile.mkstemp(dir=dest_dir, prefix=f".{Path(url).name}.", suffix=".part")
    try:
        with os.fdopen(fd, "w+b") as handle:
            for attempt in range(1, options.attempts + 1):
                handle.seek(0)
                handle.truncate()
                try:
                    _get_once(url, handle, options.timeout_s)
                    break
                except urllib.error.HTTPError as exc:
                    if exc.code not in RETRYABLE_HTTP or attempt == options.attempts:
                        raise DataError(target, f"download of {url} failed: HTTP {exc.code} {exc.reason}") from exc
                except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
                    if attempt == options.attempts:
                        reason = getattr(exc, "reason", None) or exc
                        if isinstance(exc, http.client.IncompleteRead):
                            reason = f"connection closed with {exc.expected} byte(s) of the body missing"
                        raise DataError(target, f"download of {url} failed after {attempt} attempt(s): {reason}; "
                                                "nothing was written") from exc
                time.sleep(options.retry_wait_s * 2 ** (attempt - 1))
            handle.seek(0)
            data = handle.read()
    finally:
        Path(tmp).unlink(missing_ok=True)
    got = hashlib.sha256(data).hexdigest()
    if got != source.sha256:
        raise DataError(target, f"digest mismatch for {url}: expected sha256 {source.sha256}, got {got} "
                                "(corrupted download or changed source); nothing was written")
    return data


def _content(file: DataFile, data_dir: Path, options: FetchOptions) -> tuple[bytes, str]:
    """The stored content of `file` (before any gzip) and where it came from."""
    target = data_dir / file.path
    if file.build is not None:
        spec = file.build
        id2entity, entity2entity_id = (
            load_plain_pickle(download(source, target.parent, str(target), options), source.url(options.base_url))
            for source in (spec.id2entity, spec.entity2entity_id))
        tokens = kascrs_item_tokens([data_dir / p for p in spec.item_sequences])
        content = build_kascrs_item_map(id2entity, entity2entity_id, tokens, str(target))
        return content, f"built from {spec.id2entity.url(options.base_url)} and entity2entityId.pkl"
    url = file.download.url(options.base_url)
    content = download(file.download, target.parent, str(target), options)
    if file.repair is not None:
        content = remove_stray_byte(content, file.repair, url)
    return content, f"from {url}"


def fetch_file(file: DataFile, data_dir: Path, options: FetchOptions) -> FileResult:
    """Verify a present file, or download, check, repair, compress and store it atomically."""
    target = data_dir / file.path
    if target.exists() and not options.force:
        got = stored_content_digest(target)
        if got != file.stored_sha256:
            raise DataError(target, f"present but its content does not match: expected sha256 {file.stored_sha256},"
                                    f" got {got or 'an unreadable gzip file'}; delete it (or rerun with --force) "
                                    "to download it again")
        return FileResult(file.path, "present", "sha256 verified")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        content, origin = _content(file, data_dir, options)
        stored = gzip.compress(content, compresslevel=9, mtime=0) if file.gzip else content
        plain = content if file.gzip or target.suffix != ".gz" else gzip.decompress(stored)  # a .gz kept as-is
        got = hashlib.sha256(plain).hexdigest()
        if got != file.stored_sha256:
            raise DataError(target, f"stored content would not match: expected sha256 {file.stored_sha256}, "
                                    f"got {got} ({origin}); nothing was written")
        atomic_write_bytes(target, stored)
    except OSError as exc:
        raise DataError(target, f"cannot write the data directory: {exc}") from exc
    return FileResult(file.path, "fetched", f"{len(content):,} B {origin}")


def fetch_dataset(dataset: str, data_dir: Path, options: FetchOptions = FetchOptions(),
                  report: Callable[[str], None] = print) -> list[FileResult]:
    """Fetch every file `dataset`'s loaders read into `data_dir`: one report line per downloaded file and a
    summary (files already present are only counted, so a complete data directory costs one line)."""
    results = []
    for file in dataset_files(dataset):
        result = fetch_file(file, data_dir, options)
        if result.status == "fetched":
            report(f"{result.status:<8} {result.path}  ({result.detail})")
        results.append(result)
    fetched = sum(r.status == "fetched" for r in results)
    report(f"{dataset}: {len(results)} files in {data_dir}: {fetched} fetched, "
           f"{len(results) - fetched} already present and verified")
    return results
