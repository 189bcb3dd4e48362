"""Real OpenAI-compatible servers on 127.0.0.1 for the teacher tests: `transformers serve` with SmolLM2-135M,
and a scripted stdlib server for error statuses.

The model server runs as a subprocess in its own process group (so stopping it also stops any children), bound to
loopback on a free port, with the Hugging Face hub switched off (the model is a local folder). The
server's access log is kept so tests can count the requests it actually received.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

CHAT_ROUTE = "POST /v1/chat/completions"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalLLMServer:
    """`with LocalLLMServer(model_dir) as server:` -> server.base_url ("http://127.0.0.1:<port>/v1")."""

    def __init__(self, model_dir: Path, startup_timeout_s: float = 120.0):
        self.model_dir = Path(model_dir)
        self.startup_timeout_s = startup_timeout_s
        self.port = free_port()
        self.root = f"http://127.0.0.1:{self.port}"
        self.base_url = f"{self.root}/v1"
        self.model = str(self.model_dir)  # `transformers serve` pins the model and accepts only its own name
        self.startup_seconds: float | None = None
        self._log_file = Path(tempfile.mkstemp(prefix="llm-server-", suffix=".log")[1])
        self._proc: subprocess.Popen | None = None

    def start(self) -> LocalLLMServer:
        # One torch thread: on 2 shared cores, OpenMP threads spin against the test process and other jobs
        # (measured: a 96-token answer took 4 s with 1 thread, 40-50 s with 2 under load).
        env = os.environ | {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
                            "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
        command = [sys.executable, "-m", "transformers.cli.transformers", "serve", self.model,
                   "--host", "127.0.0.1", "--port", str(self.port), "--device", "cpu", "--log-level", "info"]
        started = time.perf_counter()
        with self._log_file.open("wb") as log:
            self._proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          env=env, start_new_session=True)
        deadline = started + self.startup_timeout_s
        while time.perf_counter() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"LLM server exited with {self._proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.root}/health", timeout=2) as response:
                    if response.status == 200:
                        self.startup_seconds = time.perf_counter() - started
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"LLM server not healthy after {self.startup_timeout_s:.0f}s:\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM to the server's process group, SIGKILL if it has not exited after 15 s."""
        if self._proc is None or self._proc.poll() is not None:
            return
        try:
            os.killpg(self._proc.pid, signal.SIGTERM)
            self._proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait(timeout=15)
        except ProcessLookupError:
            pass

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def log_text(self) -> str:
        return self._log_file.read_text(errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def chat_requests(self) -> int:
        """Chat completion requests the server received, from its own access log."""
        return sum(CHAT_ROUTE in line for line in self.log_text().splitlines())

    def wait_for_log(self, requests: int, timeout_s: float = 5.0) -> int:
        """The request count once the access log shows at least `requests` (log lines land just after replies)."""
        deadline = time.monotonic() + timeout_s
        while self.chat_requests() < requests and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.chat_requests()

    def listening_addresses(self) -> list[str]:
        """Local addresses the server's processes listen on, from `ss -tlnp` (empty when ss is missing)."""
        try:
            out = subprocess.run(["ss", "-tlnpH"], capture_output=True, text=True, timeout=10).stdout
        except (FileNotFoundError, subprocess.TimeoutExpired):
            return []
        pids = {str(self.pid)} | set(self._child_pids())
        return [line.split()[3] for line in out.splitlines()
                if any(re.search(rf"pid={pid}\b", line) for pid in pids)]

    def _child_pids(self) -> list[str]:
        try:
            out = subprocess.run(["pgrep", "-g", str(self.pid)], capture_output=True, text=True, timeout=10).stdout
        except (FileNotFoundError, subprocess.TimeoutExpired):
            return []
        return out.split()

    def __enter__(self) -> LocalLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self._log_file.unlink(missing_ok=True)


def send_json(handler: BaseHTTPRequestHandler, status: int, body: dict) -> None:
    """Answer a request of a test server's handler with `body` as JSON."""
    data = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


class ScriptedServer:
    """A real HTTP server on 127.0.0.1 that answers chat requests with scripted statuses, in order.

    For the transient-error paths (429, 5xx) that a healthy model server never produces on demand.
    Each script entry is an HTTP status, or a string: the answer text of a 200 chat completion.
    """

    def __init__(self, script: list[int | str]):
        self.script = list(script)
        self.requests = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                step = owner.script[min(owner.requests, len(owner.script) - 1)]
                owner.requests += 1
                if isinstance(step, int):
                    body, status = {"error": {"message": f"scripted {step}"}}, step
                else:
                    body, status = {"id": "x", "object": "chat.completion", "created": 0, "model": "scripted",
                                    "choices": [{"index": 0, "finish_reason": "stop",
                                                 "message": {"role": "assistant", "content": step}}],
                                    "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}}, 200
                send_json(self, status, body)

            def log_message(self, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> ScriptedServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
