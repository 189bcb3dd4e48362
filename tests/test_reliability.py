"""Reliability under REAL faults: SIGKILLed Ray Train workers and CLI processes, an endpoint that times out,
fails and sends garbage, bad input at every entry of the CLI, a kill in the middle of a Parquet write, and
secrets or non-loopback ports leaking out of a run.

Slow (marked): the training kill (two 3-epoch Ray Train runs, ~3 min here) and the scoring kill (embed, retrieve
and teach in-process, then two `crs augment --stages score` processes on Ray, ~2 min).
"""

from __future__ import annotations

import base64
import json
import logging
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pytest
import torch
from bad_inputs import BAD_INPUTS, BadInput
from faults import (
    BIG_WRITE,
    GARBAGE,
    REPO,
    SLEEP,
    TEACH_PROCESS,
    FaultServer,
    cli_args,
    cli_env,
    http_status,
    is_loopback,
    kill_cli_and_its_ray,
    listening_sockets,
    make_wide_inspired,
    prepared_run,
    run_training,
    start_cli,
    teacher_sets,
    wait_for,
)
from genre_films import GENRES, TINY_BERT, films
from tiny_data import TINY_AUGMENT, make_inspired

from crs_core.artifacts import RunDir, read_table, write_table
from crs_core.config import TeacherConfig, load_config
from crs_core.errors import CRSError, DataError
from crs_core.models import load_model
from crs_core.schema import (
    CANDIDATES_SCHEMA,
    SCORES_SCHEMA,
    TEACHER_SCHEMA,
    Catalog,
    Item,
    Sample,
)
from crs_core.stages.teach import STAGE as TEACH
from crs_core.teacher import LLMTeacher, Pair
from crs_core.teacher.cache import CACHE_FILE
from crs_core.training.data import TrainingData
from rayjobs.cli import main

log = logging.getLogger(__name__)

# --- 1. training: a Ray Train worker SIGKILLed mid-epoch -----------------------------------------------

ITEMS = films(12)


def _sample(sid: str, k: int) -> Sample:
    return Sample(sid, f"d{sid}", 1, (f"I love {GENRES[k % 3]} films, take {k}",), ("seeker",), (),
                  targets=(ITEMS[(k % 3 + 3 * k) % 12].item_id,))


# 1000 contexts at batch 4: 250 steps per epoch (~4 s here), longer than the controller takes (<= 2 s) to
# register a checkpoint, so the kill lands inside epoch 2.
TRAINING = TrainingData(Catalog(ITEMS), [_sample(f"t{k}", k) for k in range(1000)],
                        [_sample(f"v{k}", k + 5000) for k in range(8)])


def model_metrics(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k in ("epoch", "train_loss") or k.startswith("valid_")}


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_worker_killed_mid_epoch_resumes_and_matches_an_uninterrupted_run(ray_local, tmp_path):
    params = {"model_name_or_config": TINY_BERT}
    clean, clean_seen = run_training(TRAINING, params, tmp_path, "clean")
    faulted, seen = run_training(TRAINING, params, tmp_path, "faulted", kill=True)
    log.warning("training: clean %.1f s (epoch ~%.1f s), faulted %.1f s; epoch-1 checkpoint registered %.1f s "
                "after it was written, worker killed %.1f s into the run", clean_seen["seconds"],
                clean_seen["appeared"][2] - clean_seen["appeared"][1], seen["seconds"], seen["registered_after_s"],
                seen["killed_at"])
    assert len(seen["killed"]) == 1 and "RayTrainWorker" in seen["killed"][0][1]
    assert not seen["epoch_2_done_at_kill"]  # the kill landed inside epoch 2
    assert not psutil.pid_exists(seen["killed"][0][0]) or psutil.Process(seen["killed"][0][0]).status() == "zombie"
    # The restarted worker resumed from the epoch-1 checkpoint: it ran epochs 2 and 3 only.
    assert [h["epoch"] for h in faulted["history"]] == [2, 3]
    assert [h["epoch"] for h in clean["history"]] == [1, 2, 3]
    # Same seed, same epochs replayed: the last epoch's metrics and weights are identical (timings aside).
    assert model_metrics(faulted["history"][-1]) == model_metrics(clean["history"][-1])
    last = [load_model(Path(m["run_path"]) / "epoch_003" / "model", catalog=TRAINING.catalog) for m in (clean, faulted)]
    weights = [dict(model.module.state_dict()) for model in last]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    np.testing.assert_array_equal(last[0].score(TRAINING.valid), last[1].score(TRAINING.valid))
    assert model_metrics(faulted["best"]) == model_metrics(clean["best"])
    assert faulted["best_epoch"] == clean["best_epoch"]


# --- 2. scoring and teaching: the CLI process SIGKILLed, then rerun --------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_scoring_killed_after_its_first_part_loses_and_duplicates_nothing(ray_local, tmp_path):
    from rayjobs.augment import run_augment

    data = make_wide_inspired(tmp_path / "data", dialogues=40)  # 80 train contexts x 3 candidates
    sets = [*TINY_AUGMENT, "ray.num_cpus=2", "ray.object_store_memory=200000000", "student.pool.batch_size=1"]
    config = load_config(overrides=sets, base={"dataset": "inspired", "data_dir": str(data),
                                               "runs_dir": str(tmp_path / "runs")})
    run_augment(config, stages=("embed", "retrieve", "teach"))
    run = config.run_dir()
    args = [*cli_args(data, tmp_path / "runs", *sets), "--stages", "score"]
    started = time.perf_counter()
    proc = start_cli("rayjobs.augment", args, tmp_path / "killed.log")
    first = wait_for(lambda: sorted(run.glob("scores.parts/*/part-*.parquet")), 600, "first scores part")
    first_part_s = time.perf_counter() - started
    orphans = kill_cli_and_its_ray(proc, timeout_s=10)
    parts = sorted(run.glob("scores.parts/*/part-*.parquet"))
    kept = pa.concat_tables([read_table(p, SCORES_SCHEMA) for p in parts])
    assert first and not (run / "scores.parquet").exists() and not (run / "stages" / "score.json").exists()

    started = time.perf_counter()
    rerun = subprocess.run([sys.executable, "-m", "rayjobs.augment", *args], cwd=REPO, env=cli_env(),
                           capture_output=True, text=True, timeout=900, check=False)
    rerun_s = time.perf_counter() - started
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    summary = json.loads((run / "stages" / "score.json").read_text())["summary"]
    log.warning("scoring: first part after %.1f s, killed with %d of %d pairs in %d part(s); rerun %.1f s; "
                "Ray processes that outlived the killed driver by 10 s: %s", first_part_s, kept.num_rows,
                summary["pairs"], len(parts), rerun_s, orphans)
    candidates = read_table(run / "candidates" / "train.parquet", CANDIDATES_SCHEMA)
    expected = set(zip(candidates["sample_id"].to_pylist(), candidates["item_id"].to_pylist()))
    scores = read_table(run / "scores.parquet", SCORES_SCHEMA)
    pairs = list(zip(scores["sample_id"].to_pylist(), scores["item_id"].to_pylist()))
    assert len(pairs) == len(set(pairs)) == len(expected) == 240 and set(pairs) == expected
    assert summary["resumed"] == kept.num_rows > 0 and summary["scored_now"] == 240 - kept.num_rows > 0
    final = {(s, i): v for s, i, v in zip(*(scores[c].to_pylist() for c in ("sample_id", "item_id", "score")))}
    assert all(final[(s, i)] == v for s, i, v in zip(*(kept[c].to_pylist() for c in ("sample_id", "item_id", "score"))))
    assert "kept from an interrupted run" in rerun.stdout and not (run / "scores.parts").exists()


def test_killed_teach_run_reruns_without_paying_again(tmp_path):
    """The `teach` stage in its own process (it needs no Ray), SIGKILLed mid-labelling by a real signal."""
    data, run = prepared_run(tmp_path, dialogues=15)  # 30 contexts: 15 x (3 + 2) = 75 pairs
    with FaultServer(["Fits.\nScore: 2"], delay_s=0.05) as server:
        overrides = [f"data_dir={data}", f"runs_dir={tmp_path / 'runs'}",
                     *teacher_sets(server, contexts=30, candidates_per_context=3)]
        command = [sys.executable, "-c", TEACH_PROCESS, *overrides]
        proc = subprocess.Popen(command, cwd=REPO, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: server.requests >= 20, 120, "20 teacher requests")
        proc.kill()
        proc.wait(timeout=30)
        first = server.prompts.copy()
        with sqlite3.connect(run / CACHE_FILE) as db:
            cached = db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
        assert 0 < cached < 75 and not (run / "teacher.parquet").exists()
        started = time.perf_counter()
        rerun = subprocess.run(command, cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=300,
                               check=False)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        second = server.prompts - first
    summary = json.loads((run / "stages" / "teach.json").read_text())["summary"]
    log.warning("teach: killed after %d requests (%d cached); rerun %.1f s, %d requests", sum(first.values()),
                cached, time.perf_counter() - started, sum(second.values()))
    assert summary["pairs"] == 75 and summary["ok"] == 75 and summary["cached"] == cached
    assert summary["requests"] == sum(second.values()) == 75 - cached
    assert len(set(first) & set(second)) <= 1  # at most the one request in flight at the kill is asked again
    assert len(read_table(run / "teacher.parquet", TEACHER_SCHEMA)) == 75


# --- 3. teacher endpoint faults ------------------------------------------------------------------------

SAMPLE = Sample("s#2", "s", 2, ("Hi!", "I love horror like Alien"), ("recommender", "seeker"), (0,), (), (1,))
ITEM = Item(1, "Aliens (1986)", "Aliens (1986) Genres: horror, action.")


def teacher(server: FaultServer, **settings) -> LLMTeacher:
    return LLMTeacher(TeacherConfig(**{"kind": "openai", "base_url": server.base_url, "model": "fault",
                                       "api_key_env": "CRS_TEST_UNSET_KEY", "backoff_s": 0.01} | settings))


def test_a_timed_out_request_is_retried():
    with FaultServer([(SLEEP, 3.0, "Score: 4"), "Score: 3"]) as server:
        started = time.perf_counter()
        label = teacher(server, timeout_s=0.5, max_retries=1).label(Pair(SAMPLE, ITEM))
        seconds = time.perf_counter() - started
    assert label.status == "ok" and label.score == 3.0 and label.requests == server.requests == 2
    assert seconds < 2.5  # the client gave up after its 0.5 s timeout, not after the server's 3 s


# A fault the endpoint keeps up, and what the failed row's error then says.
PERSISTENT_FAULTS = {"429": (429, "HTTP 429"), "500": (500, "HTTP 500"), "503": (503, "HTTP 503"),
                     "timeout": ((SLEEP, 1.0, "Score: 1"), "APITimeoutError")}


@pytest.mark.parametrize("fault, error", PERSISTENT_FAULTS.values(), ids=PERSISTENT_FAULTS.keys())
def test_persistent_faults_are_retried_with_backoff_then_failed(fault, error, caplog):
    caplog.set_level(logging.WARNING)
    with FaultServer([fault]) as server:
        started = time.perf_counter()
        label = teacher(server, max_retries=3, backoff_s=0.1, timeout_s=0.2).label(Pair(SAMPLE, ITEM))
        seconds = time.perf_counter() - started
    assert label.status == "failed" and label.score is None and error in label.error
    assert label.requests == server.requests == 4  # 1 + max_retries, no more
    # backoff 0.1, 0.2, 0.4 s, each with +-50% jitter: at least 0.35 s, at most 1.05 s of sleeping (+ 4 x 0.2 s
    # timeouts and the requests themselves)
    assert 0.35 <= seconds < 1.05 + 0.8 + 2.0 and "retry 3/3" in caplog.text


GARBAGE_BODIES = {
    "html-page": (GARBAGE, b"<html><body>502 Bad Gateway</body></html>", "text/html"),
    "truncated-json": (GARBAGE, b'{"id": "x", "choices": [{"mess', "application/json"),
    "empty-object": (GARBAGE, b"{}", "application/json"),
    "no-score-line": "I would rather not say.",
}


@pytest.mark.parametrize("body", GARBAGE_BODIES.values(), ids=GARBAGE_BODIES.keys())
def test_garbage_answers_are_reasked_then_failed_never_scored(body):
    with FaultServer([body, "Score: 1"]) as server:
        label = teacher(server, max_retries=1).label(Pair(SAMPLE, ITEM))
    assert label.status == "ok" and label.score == 1.0 and server.requests == 2
    with FaultServer([body]) as server:
        label = teacher(server, max_retries=2).label(Pair(SAMPLE, ITEM))
    assert label.status == "failed" and label.score is None and server.requests == label.requests == 3
    assert label.error.startswith(("malformed response body", "unparsable answer"))


def test_failure_share_above_the_limit_fails_teach_and_writes_nothing(tmp_path):
    """10 pairs (4 distinct contexts), one request each, in order: 9 answers then a 500 (10% failed > the
    default limit of 5%)."""
    data, run = prepared_run(tmp_path, dialogues=2)
    with FaultServer(["Score: 2"] * 9 + [500, 500, "Score: 2"]) as server:
        base = {"dataset": "inspired", "data_dir": str(data), "runs_dir": str(tmp_path / "runs")}
        sets = teacher_sets(server, contexts=10, candidates_per_context=3)
        with pytest.raises(CRSError) as info:
            TEACH.run(load_config(overrides=sets, base=base), RunDir(run))
        assert "1 of 10 pairs failed, a share of 10.0% > teacher.max_failure_share 5.0%" in str(info.value)
        assert "HTTP 500" in str(info.value) and server.requests == 10
        assert not (run / "teacher.parquet").exists() and not (run / "stages" / "teach.json").exists()
        # Under a looser limit the failure is a counted "failed" row; only that pair is asked again.
        summary = TEACH.run(load_config(overrides=[*sets, "teacher.max_failure_share=0.2"], base=base), RunDir(run))
        assert (summary["failed"], summary["failure_share"], summary["cached"], server.requests) == (1, 0.1, 9, 11)
        rows = read_table(run / "teacher.parquet", TEACHER_SCHEMA).to_pylist()
        assert [r["score"] for r in rows if r["status"] == "failed"] == [None] and len(rows) == 10
        again = TEACH.run(load_config(overrides=[*sets, "teacher.max_failure_share=0.2"], base=base), RunDir(run))
        assert (again["failed"], again["cached"], server.requests) == (0, 9, 12)


# --- 4. bad input everywhere it enters -----------------------------------------------------------------


@pytest.mark.parametrize("case", [pytest.param(case, id=f"{case.enters}:{case.case}") for case in BAD_INPUTS])
def test_bad_input_is_one_clear_error_line(case: BadInput, tmp_path, capsys):
    paths = {"data": tmp_path / "data", "runs": tmp_path / "runs", "files": tmp_path / "files",
             "run": tmp_path / "runs" / "inspired" / "default"}
    make_inspired(paths["data"])
    paths["files"].mkdir()
    common = cli_args(paths["data"], paths["runs"])
    if case.prepared:
        assert main(["prepare", *common]) == 0
    if case.break_input is not None:
        case.break_input(paths)
    capsys.readouterr()
    argv = [arg.format(**paths) for arg in case.argv] + (common if case.common_args else [])
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own refusals
        code = exc.code
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert code == 2 and "Traceback" not in err and len(errors) == 1, err
    for fragment in case.expected:
        assert fragment.format(**paths) in errors[0], errors[0]


# --- 5. atomic artifacts: SIGKILL in the middle of write_table -----------------------------------------

BIG_SCHEMA = pa.schema([("key", pa.int64()), ("value", pa.float64())])


@pytest.mark.parametrize("previous", [True, False], ids=["over-a-previous-version", "first-write"])
def test_a_write_killed_midway_leaves_the_old_version_or_nothing(previous, tmp_path):
    target = tmp_path / "scores.parquet"
    if previous:
        write_table(target, pa.table({"key": [1, 2], "value": [0.5, 0.25]}), BIG_SCHEMA)
    proc = subprocess.Popen([sys.executable, "-c", BIG_WRITE, str(target)], cwd=REPO, env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    temp = wait_for(lambda: [p for p in tmp_path.glob(".scores.parquet.*.tmp") if p.stat().st_size > 20e6], 120,
                    "20 MB of the temp file", poll_s=0.005)[0]
    proc.kill()
    proc.wait(timeout=30)
    size = temp.stat().st_size
    log.warning("write_table killed with %.0f MB of ~200 MB in %s", size / 1e6, temp.name)
    assert proc.returncode == -9 and 20e6 < size < 190e6  # really killed mid-write, not after
    if previous:
        assert read_table(target, BIG_SCHEMA).to_pydict() == {"key": [1, 2], "value": [0.5, 0.25]}
    else:
        assert not target.exists()
        with pytest.raises(DataError, match="artifact not found"):
            read_table(target, BIG_SCHEMA)
    # The partial file is a hidden temp name: no reader's pattern (part-*.parquet, *.parquet) picks it up.
    assert sorted(p.name for p in tmp_path.glob("*.parquet")) == (["scores.parquet"] if previous else [])
    with pytest.raises(DataError, match="not a readable Parquet file"):
        read_table(temp, BIG_SCHEMA)


# --- 6. secrets and exposure ---------------------------------------------------------------------------

ENV_KEY = "sk-envkey-SECRET-0123456789abcdef"
URL_KEY = "sk-urlkey-SECRET-fedcba9876543210"


@pytest.fixture(scope="module")
def exposed_run(tmp_path_factory):
    """`crs augment --stages embed,teach` through the CLI with a key in the environment and another in
    teacher.base_url; while it labels, every socket its process tree (the local Ray embed started) listens on."""
    tmp_path = tmp_path_factory.mktemp("exposure")
    data, run = prepared_run(tmp_path, dialogues=2)  # 10 pairs
    with FaultServer(["Fits.\nScore: 3"], delay_s=0.3) as server:
        base_url = server.base_url.replace("http://", f"http://crs-user:{URL_KEY}@")
        sets = teacher_sets(server, base_url=base_url, api_key_env="CRS_TEST_TEACHER_KEY", contexts=10,
                            candidates_per_context=3)
        sets += ["ray.num_cpus=2", "ray.object_store_memory=100000000", "encoder.pool.actors=1",
                 "encoder.pool.num_cpus=0.5"]
        log_path = tmp_path / "cli.log"
        started = time.perf_counter()
        # --log-level DEBUG: third-party INFO lines too (Ray's dashboard address, httpx's request URLs)
        proc = start_cli("rayjobs.augment", [*cli_args(data, tmp_path / "runs", *sets), "--stages", "embed,teach",
                                             "--log-level", "DEBUG"], log_path, CRS_TEST_TEACHER_KEY=ENV_KEY)
        wait_for(lambda: server.requests >= 2 or proc.poll() is not None, 300, "the teach stage's requests")
        listening = listening_sockets(proc.pid)
        dashboard = re.search(r"dashboard at \S*?http://([\d.]+):(\d+)", log_path.read_text())
        job_api = http_status(f"http://127.0.0.1:{dashboard[2]}/api/jobs/") if dashboard else None
        code = proc.wait(timeout=300)
        seconds = time.perf_counter() - started
    return {"run": run, "log": log_path.read_text(), "code": code, "listening": listening, "seconds": seconds,
            "dashboard": dashboard.groups() if dashboard else None, "job_api": job_api,
            "auth": server.auth_headers}


def test_secrets_never_reach_the_run_dir_or_the_logs(exposed_run):
    assert exposed_run["code"] == 0, exposed_run["log"][-3000:]
    summary = json.loads((exposed_run["run"] / "stages" / "teach.json").read_text())["summary"]
    assert summary["ok"] == summary["pairs"] == 10
    # The URL's credentials were really sent (httpx makes them Basic auth, replacing the Bearer key from the
    # environment, and the teacher warns about it); httpx logs every request URL, here redacted.
    basic = "Basic " + base64.b64encode(f"crs-user:{URL_KEY}".encode()).decode()
    assert set(exposed_run["auth"]) == {basic}
    assert "teacher.base_url carries credentials" in exposed_run["log"]
    assert "HTTP Request: POST http://***@127.0.0.1:" in exposed_run["log"]
    files = [p for p in exposed_run["run"].rglob("*") if p.is_file()]
    assert {"config.yaml", "teacher.parquet", CACHE_FILE, "teach.json"} <= {p.name for p in files}
    for secret in (ENV_KEY, URL_KEY, "SECRET"):
        assert secret not in exposed_run["log"]
        assert not [p for p in files if secret.encode() in p.read_bytes()]
    saved = (exposed_run["run"] / "config.yaml").read_text()
    assert "base_url: http://***@127.0.0.1:" in saved and "api_key_env: CRS_TEST_TEACHER_KEY" in saved


def test_local_ray_dashboard_and_every_port_listen_on_loopback(exposed_run):
    log.warning("exposure run %.1f s; listening sockets: %s", exposed_run["seconds"], exposed_run["listening"])
    assert exposed_run["dashboard"] is not None and exposed_run["dashboard"][0] == "127.0.0.1"
    port = int(exposed_run["dashboard"][1])
    assert {ip for _, ip, p in exposed_run["listening"] if p == port} == {"127.0.0.1"}
    assert exposed_run["job_api"] in (200, 401)  # the job server is the dashboard's HTTP server
    exposed = [entry for entry in exposed_run["listening"] if not is_loopback(entry[1])]
    assert len(exposed_run["listening"]) >= 5 and not exposed, f"Ray listens beyond loopback: {exposed}"
