"""`crs data fetch`: downloads checked against the manifest's digests, atomic, idempotent, and the two files that
are not plain copies (ReDial's repaired id2info, the KASCRS item table built from KGSF pickles).

No network: a stdlib HTTP server on 127.0.0.1 serves a copy of $CRS_DATA_DIR laid out like the upstream hosts
(`/<owner>/<repo>/<commit>/<path>` and `/<owner>/<repo>/releases/download/<tag>/<asset>`), with the documented
repackaging undone: .gz copies of plain upstream files are served decompressed, and id2info.json gets its
stray byte back. The KGSF pickles are not in $CRS_DATA_DIR: the server gets small pickles written here, whose
inversion is exactly the shared `item_id_to_redial_movieids.json`, and only those two manifest digests are
replaced by the digests of these pickles. The table built from them must still match the manifest's digest of
the real table, so the builder and its JSON formatting are checked against the shared copy.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import os
import pickle
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from crs_core.config import load_config
from crs_core.data import fetch as fetch_module
from crs_core.data.fetch import FetchOptions, default_data_dir, fetch_dataset, stored_content_digest
from crs_core.data.sources import dataset_files, load_plain_pickle, remove_stray_byte
from crs_core.errors import ConfigError, DataError
from crs_core.stages import run_stage
from rayjobs import data as data_cli

FAST = FetchOptions(timeout_s=10, retry_wait_s=0)
KASCRS_TABLE = "redial/kascrs/item_id_to_redial_movieids.json"


def _pickles_for(table: dict[str, list[int]]) -> tuple[bytes, bytes]:
    """KGSF-shaped pickles whose inversion gives `table`, plus an unlinked movie (None) and an unused entity."""
    id2entity = {movie: f"<http://dbpedia.org/resource/E{token}>" for token, movies in table.items()
                 for movie in movies}
    id2entity[1] = None
    entity2entity_id = {f"<http://dbpedia.org/resource/E{token}>": int(token[1:]) - 1 for token in table}
    entity2entity_id["<http://dbpedia.org/resource/Unused>"] = 10**6
    return pickle.dumps(id2entity, protocol=4), pickle.dumps(entity2entity_id, protocol=4)


@pytest.fixture(scope="module")
def upstream(real_data_dir, tmp_path_factory):
    """(served root, {dataset: manifest files with the test pickles' digests}) for both datasets."""
    root = tmp_path_factory.mktemp("upstream")
    manifests = {}
    for dataset in ("inspired", "redial"):
        files = []
        for file in dataset_files(dataset):
            stored = (real_data_dir / file.path).read_bytes()
            if file.build is not None:
                table = json.loads(stored)
                blobs = _pickles_for(table)
                inputs = (file.build.id2entity, file.build.entity2entity_id)
                for source, blob in zip(inputs, blobs):
                    (root / source.url_path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
                    (root / source.url_path.lstrip("/")).write_bytes(blob)
                id2entity, entity2entity_id = (dataclasses.replace(s, sha256=hashlib.sha256(b).hexdigest())
                                               for s, b in zip(inputs, blobs))
                file = dataclasses.replace(file, build=dataclasses.replace(
                    file.build, id2entity=id2entity, entity2entity_id=entity2entity_id))
            else:
                body = gzip.decompress(stored) if file.gzip else stored
                if file.repair is not None:
                    offset = file.repair.offset
                    body = body[:offset] + file.repair.byte + body[offset:]
                served = root / file.download.url_path.lstrip("/")
                served.parent.mkdir(parents=True, exist_ok=True)
                served.write_bytes(body)
            files.append(file)
        manifests[dataset] = files
    return root, manifests


class UpstreamHandler(BaseHTTPRequestHandler):
    def do_GET(self):
        server = self.server
        server.requests.append(self.path)
        path = server.root / self.path.lstrip("/")
        if not path.is_file():
            self.send_error(404)
            return
        body = path.read_bytes()
        if self.path in server.corrupt:
            body = bytes([body[0] ^ 1]) + body[1:]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if self.path in server.cut else body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(upstream, monkeypatch):
    """A local upstream host; `server.requests` lists the paths asked for, `corrupt`/`cut` alter answers."""
    root, manifests = upstream
    monkeypatch.setattr(fetch_module, "dataset_files", lambda dataset: manifests[dataset])
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), UpstreamHandler)
    httpd.root, httpd.requests, httpd.corrupt, httpd.cut = root, [], set(), set()
    httpd.base_url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _options(server, **changes) -> FetchOptions:
    return dataclasses.replace(FAST, base_url=server.base_url, **changes)


def _content(path: Path) -> bytes:
    return gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()


def _all_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_fetch_inspired_matches_the_shared_copy_prepares_and_reruns_without_downloading(
        server, real_data_dir, tmp_path, capsys):
    data = tmp_path / "data"
    results = fetch_dataset("inspired", data, _options(server))
    names = [r.path for r in results]
    assert [r.status for r in results] == ["fetched"] * 12 and len(server.requests) == 12
    assert _all_files(data) == sorted(names)
    for name in names:
        assert _content(data / name) == _content(real_data_dir / name), name
    first = capsys.readouterr().out.splitlines()
    assert first[0].startswith("fetched  inspired/unicrs/train_data_dbpedia.jsonl.gz  (3,965,124 B from http://")
    assert data_cli.main(["fetch", "inspired", "--data-dir", str(data), "--base-url", server.base_url]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(server.requests) == 12, "a rerun downloads nothing"
    assert out[-1].endswith("12 files in " + str(data) + ": 0 fetched, 12 already present and verified")
    assert len(out) == 1  # nothing downloaded: the summary line only
    config = load_config(base={"dataset": "inspired", "data_dir": str(data), "runs_dir": str(tmp_path / "runs")})
    summary = run_stage("prepare", config)
    assert summary["items"] == 1096
    assert [summary["splits"][s]["dialogues"] for s in ("train", "valid", "test")] == [801, 99, 99]


def test_a_corrupted_download_is_a_digest_error_and_leaves_nothing(server, tmp_path, capsys):
    file = next(f for f in dataset_files("inspired") if f.path == "inspired/kg/kg.json")
    server.corrupt.add(file.download.url_path)
    data = tmp_path / "data"
    with pytest.raises(DataError) as error:
        fetch_dataset("inspired", data, _options(server), report=lambda line: None)
    message = str(error.value)
    assert "inspired/kg/kg.json" in message and server.base_url + file.download.url_path in message
    assert f"expected sha256 {file.download.sha256}, got " in message
    assert server.requests.count(file.download.url_path) == 1, "a wrong digest is not retried"
    assert not (data / file.path).exists()
    assert all(not name.endswith((".part", ".tmp")) for name in _all_files(data))
    # the CLI turns it into one error line and exit code 2
    assert data_cli.main(["fetch", "inspired", "--data-dir", str(data), "--base-url", server.base_url]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "digest mismatch" in err[0]


def test_a_body_cut_short_is_retried_then_an_error_with_nothing_written(server, tmp_path):
    file = dataset_files("inspired")[0]
    server.cut.add(file.download.url_path)
    data = tmp_path / "data"
    with pytest.raises(DataError, match="failed after 3 attempt.*byte.*missing.*nothing was written"):
        fetch_dataset("inspired", data, _options(server), report=lambda line: None)
    assert server.requests == [file.download.url_path] * 3
    assert _all_files(data) == []


def test_a_present_file_that_does_not_match_is_refused_until_forced(server, tmp_path):
    data = tmp_path / "data"
    fetch_dataset("inspired", data, _options(server), report=lambda line: None)
    edited = data / "inspired/kg/relation2id.json"
    edited.write_text('{"star":0}')
    with pytest.raises(DataError, match="relation2id.json: present but its content does not match.*--force"):
        fetch_dataset("inspired", data, _options(server), report=lambda line: None)
    requests = len(server.requests)
    results = fetch_dataset("inspired", data, _options(server, force=True), report=lambda line: None)
    assert len(server.requests) == requests + 12 and {r.status for r in results} == {"fetched"}
    assert json.loads(edited.read_text()) == {"star": 0, "director": 1, "genre": 2}


def test_fetch_redial_repairs_id2info_and_builds_the_kascrs_table(server, upstream, real_data_dir, tmp_path):
    data = tmp_path / "data"
    results = fetch_dataset("redial", data, _options(server), report=lambda line: None)
    assert len(results) == 15 and len(server.requests) == 16  # 14 files + 2 pickles; the table is built
    for result in results:
        assert _content(data / result.path) == _content(real_data_dir / result.path), result.path
    served_id2info = next(upstream[0].rglob("id2info.json"))
    assert served_id2info.stat().st_size == 2_745_352 and len(_content(data / "redial/kg/id2info.json.gz")) == 2_745_351
    assert (data / KASCRS_TABLE).read_bytes() == (real_data_dir / KASCRS_TABLE).read_bytes()
    assert not any(name.endswith(".pkl") for name in _all_files(data))


def test_the_repair_removes_exactly_the_documented_byte_and_refuses_anything_else():
    repair = next(f for f in dataset_files("redial") if f.repair is not None).repair
    assert repair.byte == b"f"
    good = b"x" * (repair.offset - len(repair.before)) + repair.before + b"f" + repair.after + b"}"
    assert remove_stray_byte(good, repair, "id2info.json") == good[:repair.offset] + good[repair.offset + 1:]
    wrong_byte = good[:repair.offset] + b"g" + good[repair.offset + 1:]
    with pytest.raises(DataError, match="id2info.json: repair refused: expected .* at byte"):
        remove_stray_byte(wrong_byte, repair, "id2info.json")
    with pytest.raises(DataError, match="repair refused"):
        remove_stray_byte(good[1:], repair, "id2info.json")  # the same bytes one position off


def test_the_pickle_reader_refuses_globals_and_persistent_ids():
    assert load_plain_pickle(pickle.dumps({1: "<uri>", 2: None}), "x.pkl") == {1: "<uri>", 2: None}
    with pytest.raises(DataError, match="x.pkl: not a plain-data pickle: refused global (posix|nt).system"):
        load_plain_pickle(pickle.dumps(os.system), "x.pkl")

    class PersistentPickler(pickle.Pickler):
        def persistent_id(self, obj):
            return "ref" if obj == "secret" else None

    buffer = io.BytesIO()
    PersistentPickler(buffer).dump(["secret"])
    with pytest.raises(DataError, match="refused persistent id"):
        load_plain_pickle(buffer.getvalue(), "x.pkl")


def test_stored_digest_of_a_broken_gzip_is_none(tmp_path):
    broken = tmp_path / "a.jsonl.gz"
    broken.write_bytes(gzip.compress(b"{}\n")[:-4])
    assert stored_content_digest(broken) is None


def test_commands_fall_back_to_the_fetched_data_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("CRS_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert default_data_dir() == tmp_path / "cache" / "crs-augment" / "data"
    with pytest.raises(ConfigError, match=r"run `crs data fetch redial`.*CRS_DATA_DIR"):
        load_config(base={"dataset": "redial"}).resolved_data_dir()
    default_data_dir().mkdir(parents=True)
    assert load_config(base={"dataset": "redial"}).resolved_data_dir() == default_data_dir()
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # not absolute: ignored, as the XDG spec says
    assert default_data_dir() == Path.home() / ".cache" / "crs-augment" / "data"
