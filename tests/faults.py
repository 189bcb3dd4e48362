"""Real faults for tests/test_reliability.py: a misbehaving HTTP endpoint, process kills, CLI subprocesses,
and the small run directories and probes those tests share.

Nothing here simulates a failure by returning a value: the server really sleeps past the client's timeout
or sends broken bytes, and processes really receive SIGKILL.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Self

import psutil
import pyarrow as pa
import pyarrow.parquet as pq
from tiny_data import DIALOGUE, make_inspired, write_jsonl

from crs_core.artifacts import write_table
from crs_core.config import TrainConfig
from crs_core.schema import CANDIDATES_SCHEMA
from crs_core.training.data import TrainingData
from crs_core.training.loop import train_stage
from rayjobs.cli import main

REPO = Path(__file__).resolve().parent.parent
# Steps a FaultServer can take besides an HTTP status (int) or a 200 answer text (str).
SLEEP = "sleep"  # ("sleep", seconds, then): wait, then take step `then`
GARBAGE = "garbage"  # ("garbage", body bytes, content type): a 200 reply that is not a chat completion


def chat_completion(text: str) -> bytes:
    return json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": "fault",
                       "choices": [{"index": 0, "finish_reason": "stop",
                                    "message": {"role": "assistant", "content": text}}],
                       "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}}).encode()


class FaultServer:
    """An OpenAI-compatible chat endpoint on 127.0.0.1 that follows a script, one step per request (the last
    step repeats). It counts requests per prompt and keeps the Authorization headers it received."""

    def __init__(self, script: list, delay_s: float = 0.0):
        self.script = list(script)
        self.delay_s = delay_s
        self.requests = 0
        self.prompts: Counter[str] = Counter()
        self.auth_headers: list[str] = []
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # the stdlib's name
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with owner._lock:
                    step = owner.script[min(owner.requests, len(owner.script) - 1)]
                    owner.requests += 1
                    owner.prompts[body.get("messages", [{}])[-1].get("content", "")] += 1
                    owner.auth_headers.append(self.headers.get("Authorization", ""))
                time.sleep(owner.delay_s)
                owner.reply(self, step)

            def log_message(self, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def reply(self, handler: BaseHTTPRequestHandler, step) -> None:
        if isinstance(step, tuple) and step[0] == SLEEP:
            time.sleep(step[1])
            step = step[2]
        if isinstance(step, int):
            status, data, ctype = step, json.dumps({"error": {"message": f"fault {step}"}}).encode(), "application/json"
        elif isinstance(step, tuple) and step[0] == GARBAGE:
            status, data, ctype = 200, step[1], step[2]
        else:
            status, data, ctype = 200, chat_completion(step), "application/json"
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", ctype)
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout) or was killed
            pass

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def make_wide_inspired(root: Path, dialogues: int) -> Path:
    """The tiny INSPIRED tree with `dialogues` distinct train dialogues (2 train samples each), so that
    labelling and scoring take long enough to be interrupted."""
    make_inspired(root)
    variants = [[{**DIALOGUE[0], "text": f"Hi! What do you like? (visit {i})"}, *DIALOGUE[1:]]
                for i in range(dialogues)]
    write_jsonl(root / "inspired" / "unicrs" / "train_data_dbpedia.jsonl.gz", variants, gz=True)
    return root


def wait_for(condition: Callable[[], object], timeout_s: float, what: str, poll_s: float = 0.02):
    """Poll `condition` until it returns something truthy (returned), or fail naming `what`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll_s)
    raise TimeoutError(f"{what}: not seen within {timeout_s:.0f} s")


def cli_env(**extra: str) -> dict[str, str]:
    return os.environ | {"PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", "RAY_USAGE_STATS_ENABLED": "0",
                         "OMP_WAIT_POLICY": "PASSIVE", "TOKENIZERS_PARALLELISM": "false"} | extra


def start_cli(module: str, args: list[str], log: Path, **env: str) -> subprocess.Popen:
    """`python -m <module> args...` from the repository root, in its own session, output into `log`."""
    with log.open("wb") as handle:
        return subprocess.Popen([sys.executable, "-m", module, *args], cwd=REPO, stdout=handle,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=cli_env(**env),
                                start_new_session=True)


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def sigkill(processes: list[psutil.Process]) -> None:
    """SIGKILL exactly these processes (ours, by pid) and reap them."""
    for proc in processes:
        try:
            proc.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(processes, timeout=30)


def kill_cli_and_its_ray(proc: subprocess.Popen, timeout_s: float = 30.0) -> list[str]:
    """The fault: SIGKILL the CLI process alone. Then clean up: the local Ray it started (raylet, GCS,
    workers) is ours too; returns "name(pid)" of those that outlived their driver by `timeout_s`."""
    tree = descendants(proc.pid)
    names = {}
    for child in tree:
        try:
            names[child.pid] = child.name()
        except psutil.NoSuchProcess:
            pass
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    _, alive = psutil.wait_procs(tree, timeout=timeout_s)
    sigkill(alive)
    return [f"{names.get(p.pid, '?')}({p.pid})" for p in alive]


# --- run directories --------------------------------------------------------------------------------------


def cli_args(data: Path, runs: Path, *sets: str) -> list[str]:
    return ["--dataset", "inspired", "--data-dir", str(data), "--runs-dir", str(runs),
            *[arg for value in sets for arg in ("--set", value)]]


def prepared_run(tmp_path: Path, dialogues: int | None = None) -> tuple[Path, Path]:
    """`crs prepare` on a tiny tree, then every catalog item as a candidate of every train sample (what
    `retrieve` would write), so `teach` runs without Ray. Returns (data dir, run dir)."""
    root = tmp_path / "data"
    data = make_inspired(root) if dialogues is None else make_wide_inspired(root, dialogues)
    assert main(["prepare", *cli_args(data, tmp_path / "runs")]) == 0
    run = tmp_path / "runs" / "inspired" / "default"
    samples = pq.read_table(run / "samples" / "train.parquet").column("sample_id").to_pylist()
    items = pq.read_table(run / "items.parquet").column("item_id").to_pylist()
    rows = [{"sample_id": s, "item_id": i, "rank": r, "similarity": 1.0 - r / 10} for s in samples
            for r, i in enumerate(items)]
    write_table(run / "candidates" / "train.parquet", pa.Table.from_pylist(rows, schema=CANDIDATES_SCHEMA),
                CANDIDATES_SCHEMA)
    return data, run


def teacher_sets(server: FaultServer, **settings) -> list[str]:
    """`--set` values for an OpenAI-kind teacher at `server`: one request per pair, in order, unless changed."""
    base = {"kind": "openai", "base_url": server.base_url, "model": "fault", "api_key_env": "CRS_TEST_UNSET_KEY",
            "concurrency": 1, "max_retries": 0, "backoff_s": 0.01, "timeout_s": 10} | settings
    return [f"teacher.{k}={v}" for k, v in base.items()]


# The `teach` stage alone in a process (it needs no Ray): `python -c TEACH_PROCESS key=value...`.
TEACH_PROCESS = """import sys
from crs_core.artifacts import RunDir
from crs_core.config import load_config
from crs_core.stages.teach import STAGE as TEACH
config = load_config(overrides=sys.argv[1:])
TEACH.run(config, RunDir(config.run_dir()))
"""

# `python -c BIG_WRITE <target>`: write_table of a 200 MB table that does not compress.
BIG_WRITE = """import sys
import numpy as np, pyarrow as pa
from pathlib import Path
from typing import Self
from crs_core.artifacts import write_table
rows = 12_500_000
rng = np.random.default_rng(0)
table = pa.table({"key": rng.integers(0, 2**62, rows), "value": rng.random(rows)})
write_table(Path(sys.argv[1]), table, table.schema)
"""


# --- probes -----------------------------------------------------------------------------------------------


def train_workers() -> list[psutil.Process]:
    """This test process's Ray Train workers (children of its own raylet; other Ray instances untouched)."""
    return [p for p in descendants(psutil.Process().pid) if "RayTrainWorker" in " ".join(p.cmdline())]


def registered(run: Path, checkpoint: str) -> bool:
    """Whether the Ray Train controller has registered `checkpoint` (it then lists it in its snapshot; a
    restarted worker group resumes from registered checkpoints only)."""
    snapshot = run / "checkpoint_manager_snapshot.json"
    return snapshot.exists() and checkpoint in snapshot.read_text()


def listening_sockets(pid: int) -> list[tuple[str, str, int]]:
    """(process name, ip, port) of every listening TCP socket of `pid` and its descendants."""
    found = []
    for proc in [psutil.Process(pid), *descendants(pid)]:
        try:
            found += [(proc.name(), c.laddr.ip, c.laddr.port) for c in proc.net_connections("inet")
                      if c.status == psutil.CONN_LISTEN]
        except psutil.NoSuchProcess:
            pass
    return found


def is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip.split("%")[0])
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def http_status(url: str) -> int:
    """The HTTP status `url` answers with (an error status is an answer too, e.g. 401 under token auth)."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


# --- a Ray Train run with its worker SIGKILLed --------------------------------------------------------------


def run_training(data: TrainingData, backbone_params: dict, tmp_path: Path, name: str,
                 kill: bool = False) -> tuple[dict, dict]:
    """One 3-epoch stage-2 run of `train_stage` (1 worker, max_failures=1, seed 7). With `kill`, a thread
    SIGKILLs the worker during epoch 2, once the controller has registered the epoch-1 checkpoint; returns
    (metrics, what the killer saw)."""
    config = TrainConfig(epochs_stage2=3, learning_rate=1e-3, batch_size=4, max_length=24, num_workers=1,
                         cpus_per_worker=1.0, alpha=0.0, max_failures=1, storage_path=str(tmp_path / name))
    run = tmp_path / name / name
    seen: dict = {"appeared": {}}

    def watch() -> None:
        start = time.monotonic()
        for epoch in (1, 2, 3):
            checkpoint = run / f"epoch_{epoch:03d}" / "progress.json"
            wait_for(checkpoint.exists, 600, f"epoch {epoch}")
            seen["appeared"][epoch] = time.monotonic() - start
            if epoch == 1 and kill:
                wait_for(lambda: registered(run, "epoch_001"), 60, "epoch 1 checkpoint registered")
                seen["registered_after_s"] = time.monotonic() - start - seen["appeared"][1]
                victims = train_workers()
                seen["epoch_2_done_at_kill"] = (run / "epoch_002").exists()
                seen["killed"] = [(p.pid, " ".join(p.cmdline())) for p in victims]
                sigkill(victims)
                seen["killed_at"] = time.monotonic() - start

    def watch_or_record() -> None:
        try:
            watch()
        except Exception as exc:  # noqa: BLE001 - reported by the test, not lost in a thread
            seen["watch_error"] = repr(exc)

    watcher = threading.Thread(target=watch_or_record, daemon=True)
    watcher.start()
    started = time.perf_counter()
    _, metrics = train_stage(config, data, "finetune", name=name, seed=7, backbone_params=backbone_params)
    seen["seconds"] = time.perf_counter() - started
    watcher.join(timeout=60)
    assert "watch_error" not in seen, seen["watch_error"]
    return metrics, seen
