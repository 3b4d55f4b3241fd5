"""Live processes for the demo tests: a real gateway on the shipped tiny model, and `openvlthinker demo` in front of it.

Both are started once per session exactly as a user starts them (`openvlthinker serve`,
`openvlthinker demo`), so the demo is tested over HTTP like the browser uses it; nothing is mocked.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from serve.launcher import ServerProcess, free_port, wait_for_url

API_KEY, ADMIN_KEY = "sk-demo-test", "adm-demo-test"


class DemoProcess:
    """`openvlthinker demo ARGS` on a free port; waits until the page answers."""

    def __init__(self, args: list[str], log_path: Path, timeout: float = 120):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
        self._log = open(log_path, "w+b")
        self.proc = subprocess.Popen([sys.executable, "-m", "openvlthinker.cli", "demo", "--port", str(self.port), *args],
                                     stdout=self._log, stderr=subprocess.STDOUT, env=env)
        if wait_for_url(self.proc, self.url, timeout):
            return
        if self.proc.poll() is not None:
            raise RuntimeError(f"demo exited with {self.proc.returncode}:\n{self.output()}")
        self.stop()
        raise TimeoutError(f"demo did not start in {timeout} s:\n{self.output()}")

    def output(self) -> str:
        """The demo's log (tests assert that no traceback reached it)."""
        return self.log_path.read_bytes().decode(errors="replace")

    def stop(self) -> None:
        """Ctrl-C, then kill."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


class Live:
    """Handles the tests need: the gateway, the demo, and a way to read the store through the admin API."""

    api_key, admin_key = API_KEY, ADMIN_KEY

    def __init__(self, gateway: ServerProcess, demo: DemoProcess, metrics: Path, adapters: Path):
        self.gateway, self.demo, self.metrics, self.adapters = gateway, demo, metrics, adapters

    def admin(self, method: str, path: str, **kwargs) -> dict:
        """An admin call to the gateway (adapters, interactions); raises on an error status."""
        r = httpx.request(method, f"{self.gateway.url}/v1{path}", timeout=60,
                          headers={"Authorization": f"Bearer {ADMIN_KEY}"}, **kwargs)
        r.raise_for_status()
        return r.json()

    def interaction(self, interaction_id: str) -> dict:
        """GET /v1/interactions/{id}: the stored request, answer and feedback rows."""
        return self.admin("GET", f"/interactions/{interaction_id}")["data"][0]


@pytest.fixture(scope="session")
def live(tmp_path_factory):
    """A gateway (shipped tiny model, one torch thread) and a demo pointing at it, for the whole session."""
    from openvlthinker.models import DEFAULT_MODEL

    root = tmp_path_factory.mktemp("demo-live")
    metrics = root / "rl" / "metrics.jsonl"
    metrics.parent.mkdir()
    gateway = ServerProcess(["--model", DEFAULT_MODEL, "--run-dir", str(root / "serve"), "--threads", "1",
                             "--api-key", API_KEY, "--admin-key", ADMIN_KEY, "--log-level", "warning",
                             "--adapters-dir", str(root / "adapters")],
                            log_path=root / "serve.log", timeout=120)
    try:
        demo = DemoProcess(["--endpoint", gateway.url, "--api-key", API_KEY, "--admin-key", ADMIN_KEY,
                            "--rl-metrics", str(metrics)], log_path=root / "demo.log")
    except BaseException:
        gateway.stop()
        raise
    yield Live(gateway, demo, metrics, root / "adapters")
    demo.stop()
    gateway.stop()


@pytest.fixture(scope="session")
def example_image(tmp_path_factory) -> str:
    """A ShapeWorld counting image, as a new user would pick from the examples."""
    from demo.examples import write_examples

    return write_examples(tmp_path_factory.mktemp("demo-images"))[0]["files"][0]
