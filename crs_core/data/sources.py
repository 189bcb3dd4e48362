"""Where each dataset file comes from, and the exact steps from the upstream bytes to the stored file.

`sources.json` (shipped in the package) lists, per dataset, every file the loaders read: its path under the
data directory, its public source pinned to a commit (or a release asset of this project), the sha256 of the
upstream bytes, whether it is stored gzipped, the one repair some file needs, and the sha256 of the stored
content (decompressed), so a present file is checked without downloading anything.

Two files are not plain copies: ReDial's `kg/id2info.json` upstream carries one stray byte that makes it
invalid JSON (removed here, only after checking that byte and its neighbours), and
`kascrs/item_id_to_redial_movieids.json` is built from two KGSF pickles, read with an unpickler that refuses
every global, so a pickle can only ever yield plain data.
"""

from __future__ import annotations

import csv
import io
import json
import pickle
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from crs_core.data.io import open_text
from crs_core.errors import CRSError, DataError

MANIFEST = "sources.json"
RAW_HOST = "https://raw.githubusercontent.com"
GITHUB_HOST = "https://github.com"
KASCRS_ITEM_TOKEN = re.compile(r"\[I(\d+)\]")


@dataclass(frozen=True)
class Download:
    """One upstream file: a path on a host (raw GitHub content or a GitHub release) and its sha256."""

    host: str
    url_path: str
    sha256: str

    def url(self, base_url: str | None = None) -> str:
        """The upstream URL, or the same path on `base_url` (a mirror or a local test server)."""
        return (base_url.rstrip("/") if base_url else self.host) + self.url_path


@dataclass(frozen=True)
class StrayByte:
    """A single byte to remove at `offset`, checked against the byte itself and the text around it."""

    offset: int
    byte: bytes
    before: bytes
    after: bytes


@dataclass(frozen=True)
class KascrsItemMap:
    """Inputs of the KASCRS item table: KGSF's `id2entity.pkl` and `entity2entityId.pkl`, and the KASCRS CSVs
    whose `[I<n>]` tokens are the table's keys."""

    id2entity: Download
    entity2entity_id: Download
    item_sequences: tuple[str, ...]


@dataclass(frozen=True)
class DataFile:
    path: str  # relative to the data directory, the layout the loaders read
    stored_sha256: str  # of the stored content, decompressed when the file is .gz
    download: Download | None = None
    gzip: bool = False
    repair: StrayByte | None = None
    build: KascrsItemMap | None = None


def _download(source: dict, sha256: str) -> Download:
    if "release" in source:
        return Download(GITHUB_HOST, f"/{source['release']}/releases/download/{source['tag']}/{source['asset']}",
                        sha256)
    return Download(RAW_HOST, f"/{source['repo']}/{source['commit']}/{source['path']}", sha256)


def _data_file(entry: dict) -> DataFile:
    if "build" in entry:
        id2entity, entity2entity_id = (_download(i["source"], i["sha256"]) for i in entry["build"]["inputs"])
        build = KascrsItemMap(id2entity, entity2entity_id, tuple(entry["build"]["item_sequences"]))
        return DataFile(entry["path"], entry["stored_sha256"], build=build)
    repair = None
    if "repair" in entry:
        spec = entry["repair"]["remove_byte"]
        repair = StrayByte(spec["offset"], spec["byte"].encode(), spec["before"].encode(), spec["after"].encode())
    return DataFile(entry["path"], entry["stored_sha256"], _download(entry["source"], entry["sha256"]),
                    gzip=entry["gzip"], repair=repair)


def load_manifest() -> dict[str, list[DataFile]]:
    """{dataset: files in fetch order} from the packaged sources.json (inputs of a built file come first)."""
    text = resources.files("crs_core.data").joinpath(MANIFEST).read_text(encoding="utf-8")
    return {name: [_data_file(entry) for entry in entries] for name, entries in json.loads(text)["datasets"].items()}


def dataset_files(dataset: str) -> list[DataFile]:
    manifest = load_manifest()
    if dataset not in manifest:
        raise CRSError(f"unknown dataset {dataset!r}: `crs data` knows {', '.join(sorted(manifest))}")
    return manifest[dataset]


def remove_stray_byte(data: bytes, repair: StrayByte, origin: str) -> bytes:
    """Drop the one documented stray byte, refusing if the file does not look exactly as documented."""
    start, end = repair.offset - len(repair.before), repair.offset + 1
    found = data[start:end + len(repair.after)]
    expected = repair.before + repair.byte + repair.after
    if found != expected:
        raise DataError(origin, f"repair refused: expected {expected!r} at byte {start}, found {found!r}")
    return data[:repair.offset] + data[end:]


class PlainDataUnpickler(pickle.Unpickler):
    """Reads only plain data (dicts, lists, str, numbers): any class, function or persistent id is refused,
    so loading a pickle can never run code."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"refused global {module}.{name}: only plain data is allowed")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refused persistent id: only plain data is allowed")


def load_plain_pickle(data: bytes, origin: str):
    try:
        return PlainDataUnpickler(io.BytesIO(data)).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
        raise DataError(origin, f"not a plain-data pickle: {exc}") from exc


def kascrs_item_tokens(paths: list[Path]) -> set[int]:
    """The `<n>` of every `[I<n>]` movie token in the KASCRS `sequence` columns."""
    tokens: set[int] = set()
    for path in paths:
        with open_text(path) as handle:
            for line, row in enumerate(csv.DictReader(handle), start=2):
                if row.get("sequence") is None:
                    raise DataError(path, "missing sequence", line=line, field="sequence")
                tokens.update(int(n) for n in KASCRS_ITEM_TOKEN.findall(row["sequence"]))
    return tokens


def build_kascrs_item_map(id2entity: dict, entity2entity_id: dict, tokens: set[int], origin: str) -> bytes:
    """`{"I<n>": [ReDial movieId, ...]}` for every KASCRS token, as compact JSON ordered by n.

    KGSF maps a ReDial movieId to a DBpedia URI (`id2entity`, None when unlinked) and a URI to an entity id
    (`entity2entityId`); a KASCRS movie token is that entity id + 1."""
    if not isinstance(id2entity, dict) or not isinstance(entity2entity_id, dict):
        raise DataError(origin, "expected two dicts: id2entity {movieId: URI} and entity2entityId {URI: id}")
    movies_of_token: dict[int, list[int]] = {}
    for movie_id, uri in id2entity.items():
        entity_id = entity2entity_id.get(uri) if uri is not None else None
        if entity_id is not None:
            movies_of_token.setdefault(entity_id + 1, []).append(movie_id)
    unmapped = sorted(tokens - movies_of_token.keys())
    if unmapped:
        raise DataError(origin, f"{len(unmapped)} KASCRS item id(s) have no ReDial movie in the KGSF pickles "
                                f"(first: I{unmapped[0]})")
    table = {f"I{n}": sorted(movies_of_token[n]) for n in sorted(tokens)}
    return json.dumps(table, separators=(",", ":")).encode()
