"""/health says 503, with the reason, while the vLLM child is dead or restarting, and 200 once it serves again.

vLLM is not installed in this environment (its real tests are under tests/serve/vllm/, marked
`vllm`), so the gateway runs its real vLLM engine and process supervision against a stand-in: a
small Python HTTP server launched through `--vllm-python`, answering vLLM's /health and /v1/models
and nothing else. The test kills that real child process, as a crash would; while a marker file
exists the stand-in exits at once on start, so its restarts fail until the marker is removed.
"""

import os
import signal
import stat
import sys
import time

import httpx
import pytest

from serve.launcher import ServerProcess

STAND_IN = '''
import json, os, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

if os.path.exists(sys.argv[1]):  # the marker: fail this start, as a vLLM that cannot come up would
    sys.exit(3)
port = int(sys.argv[sys.argv.index("--port") + 1])


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        body = {"/health": b"", "/v1/models": json.dumps({"data": [{"id": "base", "max_model_len": 512}]}).encode()}
        if self.path not in body:
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body[self.path])))
        self.end_headers()
        self.wfile.write(body[self.path])


HTTPServer(("127.0.0.1", port), Handler).serve_forever()
'''


def _health(url: str) -> httpx.Response:
    return httpx.get(f"{url}/health", timeout=5)


def _wait_for_status(url: str, status: int, timeout: float) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        resp = _health(url)
        if resp.status_code == status:
            return resp
        time.sleep(0.1)
    pytest.fail(f"/health did not answer {status} within {timeout} s (last: {resp.status_code} {resp.text})")


@pytest.mark.slow
def test_health_is_503_while_the_vllm_child_is_dead_and_200_once_it_is_back(tmp_path, tiny_model):
    marker = tmp_path / "fail-starts"
    (tmp_path / "stand_in.py").write_text(STAND_IN)
    python = tmp_path / "vllm-python"
    # the engine runs PYTHON -m vllm.entrypoints.openai.api_server ARGS; the stand-in ignores all but --port
    python.write_text(f'#!/bin/sh\nshift 2\nexec "{sys.executable}" "{tmp_path / "stand_in.py"}" "{marker}" "$@"\n')
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    run_dir = tmp_path / "run"
    server = ServerProcess(["--engine", "vllm", "--vllm-python", str(python), "--model", str(tiny_model),
                            "--run-dir", str(run_dir), "--log-level", "warning"], log_path=tmp_path / "gateway.log")
    try:
        assert _health(server.url).json()["status"] == "ok"
        child = int((run_dir / "vllm.pid").read_text())
        marker.touch()
        os.killpg(child, signal.SIGKILL)  # vLLM dies, workers and all
        resp = _wait_for_status(server.url, 503, 5)
        body = resp.json()
        assert body["status"] == "unavailable" and body["engine_ready"] is False and resp.headers["Retry-After"]
        assert "vLLM" in body["reason"] and ("exited" in body["reason"] or "not serving" in body["reason"])
        time.sleep(2)  # restarts keep failing meanwhile: still unhealthy, and the gateway still answers
        assert _health(server.url).status_code == 503
        chat = httpx.post(f"{server.url}/v1/chat/completions", timeout=10,
                          json={"model": "openvlthinker", "messages": [{"role": "user", "content": "hi"}]})
        assert chat.status_code == 503, chat.text
        marker.unlink()
        assert _wait_for_status(server.url, 200, 60).json()["status"] == "ok"  # restarted (backoff <= 30 s)
        assert int((run_dir / "vllm.pid").read_text()) != child
    finally:
        server.stop()


def test_a_scripted_engine_without_a_health_check_is_healthy(make_client, h):
    """Engines that do not report their own liveness (the scripted one here) keep the old answer."""
    assert make_client().get("/health").json()["status"] == "ok"

    class Broken(h.ScriptedEngine):
        def health(self):
            raise RuntimeError("probe exploded")

    resp = make_client(Broken()).get("/health")
    assert resp.status_code == 503 and "probe exploded" in resp.json()["reason"]
