"""The OpenAI Batch API round trip: export the teacher's requests, have a real local HTTP server answer each
request body as /v1/chat/completions would, assemble the batch output file, import it into teacher.parquet."""

from __future__ import annotations

import json
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread

import pytest
from llm_server import send_json
from test_teacher import CATALOG, make_run

from crs_core.artifacts import read_table
from crs_core.config import Config, TeacherConfig
from crs_core.errors import ConfigError, CRSError, DataError
from crs_core.schema import SAMPLES_SCHEMA, TEACHER_SCHEMA, table_to_samples
from crs_core.stages.teach import STAGE as TEACH, export_batch, import_batch
from crs_core.teacher import load_prompt, parse_custom_id
from rayjobs import teach as teach_entry

# What the scripted judge answers per candidate title: Notting Hill's answer has no final `Score:` line.
ANSWERS = {
    "Insidious (2010)": "Same director as the film the user loved.\nScore: 4",
    "Saw (2004)": "Horror, but far gorier.\nScore: 2",
    "Target Alpha (2001)": "A drama, not what was asked.\nScore: 1",
    "Notting Hill (1999)": "A romantic comedy; I would rate it low.",
}
PROMPT_TOKENS, COMPLETION_TOKENS = 120, 9


class JudgeServer:
    """A real HTTP server on 127.0.0.1 answering /v1/chat/completions from the candidate the request names."""

    def __init__(self, answers: dict[str, str]):
        owner = self
        self.bodies: list[dict] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.bodies.append(body)
                candidate = body["messages"][-1]["content"].split("Candidate movie:\n", 1)[1]
                title = next(t for t in answers if candidate.startswith(t))
                reply = {"id": f"chatcmpl-{len(owner.bodies)}", "object": "chat.completion", "created": 0,
                         "model": body["model"], "choices": [{"index": 0, "finish_reason": "stop", "message": {
                             "role": "assistant", "content": answers[title]}}],
                         "usage": {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": COMPLETION_TOKENS,
                                   "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS}}
                send_json(self, 200 if self.path == "/v1/chat/completions" else 404, reply)

            def log_message(self, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.root = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> JudgeServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def answer(self, request: dict) -> dict:
        """The output line the Batch API writes for one input line: the request sent as is, its reply wrapped."""
        sent = urllib.request.Request(self.root + request["url"], data=json.dumps(request["body"]).encode(),
                                      headers={"Content-Type": "application/json"}, method=request["method"])
        with urllib.request.urlopen(sent, timeout=10) as response:
            return {"id": f"batch_req_{len(self.bodies)}", "custom_id": request["custom_id"],
                    "response": {"status_code": response.status, "request_id": "req", "body": json.load(response)},
                    "error": None}


def batch_config(**changes) -> Config:
    teacher = TeacherConfig(kind="openai", model="judge-model", contexts=2, candidates_per_context=4,
                            usd_per_1k_input_tokens=2.5, usd_per_1k_output_tokens=10.0, max_failure_share=0.5)
    for key, value in changes.items():
        setattr(teacher, key, value)
    return Config(seed=3, teacher=teacher)


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def write_lines(path: Path, lines: list) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def test_export_answer_import_round_trip(tmp_path):
    run, config = make_run(tmp_path / "run"), batch_config()
    exported = export_batch(config, run, tmp_path / "batch_input.jsonl")
    requests = read_lines(tmp_path / "batch_input.jsonl")
    assert exported["requests"] == exported["pairs"] == len(requests) == 8 and exported["contexts"] == 2
    samples = {s.sample_id: s for s in table_to_samples(read_table(run.path("samples", "train.parquet"),
                                                                   SAMPLES_SCHEMA))}
    prompt = load_prompt("teacher_v1")
    for request in requests:
        sample_id, item_id = parse_custom_id(request["custom_id"])
        assert (request["method"], request["url"]) == ("POST", "/v1/chat/completions")
        assert request["body"] == {"model": "judge-model", "temperature": 0.0, "max_tokens": 512,
                                   "messages": prompt.render(samples[sample_id], CATALOG.get(item_id))}
    pairs = [parse_custom_id(r["custom_id"]) for r in requests]
    assert sorted({item for _, item in pairs}) == [2, 3, 4, 6]  # 4 candidates of each context; movie 1 was mentioned

    with JudgeServer(ANSWERS) as server:
        answered = [server.answer(r) for r in requests]
    assert len(server.bodies) == 8
    missing = answered.pop(0)  # the batch could not run this request: it is on the error file instead
    output = write_lines(tmp_path / "batch_output.jsonl", answered[::-1])  # output order is not input order
    errors = write_lines(tmp_path / "batch_errors.jsonl", [{
        "id": "batch_req_x", "custom_id": missing["custom_id"], "response": None,
        "error": {"code": "batch_expired", "message": "not completed within the window"}}])

    summary = import_batch(config, run, [output, errors])
    rows = {(r["sample_id"], r["item_id"]): r
            for r in read_table(run.path("teacher.parquet"), TEACHER_SCHEMA).to_pylist()}
    assert sorted(rows) == sorted(pairs)
    scores = {2: 4.0, 4: 1.0, 6: 2.0}
    for key, row in rows.items():
        assert (row["model"], row["prompt_version"], row["cached"]) == ("judge-model", prompt.version, False)
        if key == parse_custom_id(missing["custom_id"]):
            assert (row["status"], row["score"], row["input_tokens"]) == ("failed", None, 0)
            assert row["error"] == "batch error batch_expired: not completed within the window"
        elif key[1] == 3:
            assert (row["status"], row["score"], row["output_tokens"]) == ("failed", None, COMPLETION_TOKENS)
            assert row["error"].startswith("unparsable answer: last line is not 'Score: <0-4>'")
        else:
            assert (row["status"], row["score"], row["error"]) == ("ok", scores[key[1]], None)
            assert (row["input_tokens"], row["output_tokens"]) == (PROMPT_TOKENS, COMPLETION_TOKENS)
            assert row["rationale"] == ANSWERS[CATALOG.get(key[1]).title]
    assert (summary["pairs"], summary["ok"], summary["failed"], summary["requests"]) == (8, 5, 3, 8)
    assert (summary["input_tokens"], summary["output_tokens"]) == (7 * 120, 7 * 9)
    # list price 840 * 2.5 / 1000 + 63 * 10 / 1000 = 2.73 USD; the Batch API bills half
    assert summary["cost_usd_list_price"] == pytest.approx(2.73) and summary["cost_usd"] == pytest.approx(1.365)
    assert summary["batch_price_factor"] == 0.5 and summary["model"] == "judge-model"
    assert summary["score_histogram"] == {"0": 0, "1": 2, "2": 2, "3": 0, "4": 1}

    # only the 3 failed pairs are exported again; their answers complete the labels, the rest come from the cache
    again = export_batch(config, run, tmp_path / "retry_input.jsonl")
    assert (again["requests"], again["cached"]) == (3, 5)
    with JudgeServer(ANSWERS | {"Notting Hill (1999)": "A romantic comedy.\nScore: 0"}) as server:
        retried = write_lines(tmp_path / "retry_output.jsonl",
                              [server.answer(r) for r in read_lines(tmp_path / "retry_input.jsonl")])
    final = import_batch(config, run, [retried])
    assert (final["ok"], final["failed"], final["cached"], final["input_tokens"]) == (8, 0, 5, 3 * 120)
    assert final["score_histogram"] == {"0": 2, "1": 2, "2": 2, "3": 0, "4": 2}
    assert TEACH.run(config, run).reused is True  # `crs augment` goes on from score with these labels


def good_line(custom_id: str) -> dict:
    body = {"choices": [{"message": {"content": "Score: 3"}}], "usage": {"prompt_tokens": 1, "completion_tokens": 1}}
    return {"id": "b", "custom_id": custom_id, "response": {"status_code": 200, "body": body}, "error": None}


BROKEN_OUTPUT = [  # (name, line 2 made from the first two exported custom_ids, field, message)
    ("not-json", lambda first, second: "{not json", None, "malformed JSON"),
    ("unknown-pair", lambda first, second: good_line("train-9#4|2"), "custom_id",
     "unknown custom_id 'train-9#4|2': not a pair that teach selects"),
    ("no-item-id", lambda first, second: good_line("train-0#4"), "custom_id", "unknown custom_id: 'train-0#4' is not"),
    ("no-custom-id", lambda first, second: {"response": None, "error": {"code": "x"}}, "custom_id", "missing field"),
    ("twice", lambda first, second: good_line(first), "custom_id",
     "custom_id '{first}' answered twice: first at {path}, line 1"),
    ("empty", lambda first, second: {"custom_id": second, "response": None, "error": None}, "response",
     "neither a response nor an error"),
    ("response-text", lambda first, second: {"custom_id": second, "response": "200", "error": None}, "response",
     "expected an object or null, got str"),
]


@pytest.mark.parametrize("name, make_line, field, message", BROKEN_OUTPUT, ids=[b[0] for b in BROKEN_OUTPUT])
def test_a_broken_output_line_names_file_line_and_field(tmp_path, name, make_line, field, message):
    run, config = make_run(tmp_path / "run"), batch_config()
    export_batch(config, run, tmp_path / "in.jsonl")
    first, second = (r["custom_id"] for r in read_lines(tmp_path / "in.jsonl")[:2])
    path = write_lines(tmp_path / "out.jsonl", [good_line(first), make_line(first, second)])
    with pytest.raises(DataError) as info:
        import_batch(config, run, [path])
    where = f"{path}, line 2" + (f", field '{field}'" if field else "")
    assert str(info.value).startswith(f"{where}: {message.format(first=first, path=path)}")
    assert not run.path("teacher.parquet").exists()


def test_batch_needs_the_llm_teacher_and_one_flag(tmp_path, capsys):
    run = make_run(tmp_path / "run")
    with pytest.raises(ConfigError, match="--export-batch: the Batch API serves the LLM teacher, but teacher.kind"):
        export_batch(batch_config(kind="kg"), run, tmp_path / "in.jsonl")
    with pytest.raises(CRSError, match="--import-batch"):
        import_batch(batch_config(kind="recorded"), run, [tmp_path / "in.jsonl"])
    code = teach_entry.main(["--runs-dir", str(tmp_path / "runs"), "--data-dir", str(tmp_path),
                             "--export-batch", "a.jsonl", "--import-batch", "b.jsonl"])
    assert code == 2 and "use one at a time" in capsys.readouterr().err


def test_run_dir_is_untouched_by_export(tmp_path):
    run = make_run(tmp_path / "run")
    export_batch(batch_config(), run, tmp_path / "in.jsonl")
    assert not run.path("teacher.parquet").exists() and not run.path("stages", "teach.json").exists()
