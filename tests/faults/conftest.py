"""Fixtures for the fault tests: real gateway processes on the shipped tiny model, and their clients.

Every fault here is done for real to a real process (kill -9, a full filesystem, broken files in
the adapters folder), and what is checked is what a client was told: an id it got back with a
200 must be in the store afterwards. The gateways are `openvlthinker serve` started through
`serve.launcher.ServerProcess`, as the end-to-end tests in tests/serve/ start theirs.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Iterator

import httpx
import pytest

from serve.launcher import ServerProcess

ADMIN = "adm-faults"


class Gateway(ServerProcess):
    """`openvlthinker serve` on the shipped tiny model with an admin key, and calls to its API."""

    def __init__(self, run_dir: Path, *flags: str, timeout: float = 120, log_dir: Path | None = None):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        log = Path(log_dir or self.run_dir.parent) / f"{self.run_dir.name}-{time.time_ns()}.log"
        super().__init__(["--run-dir", str(run_dir), "--admin-key", ADMIN, "--threads", "1", "--log-level", "warning",
                          *flags], log_path=log, timeout=timeout)

    def admin(self, method: str, path: str, **kwargs) -> httpx.Response:
        return httpx.request(method, f"{self.url}/v1{path}", headers={"Authorization": f"Bearer {ADMIN}"},
                             timeout=60, **kwargs)

    def chat(self, text: str = "How many circles are there?", **params) -> httpx.Response:
        body = {"model": "openvlthinker", "max_tokens": 8, "messages": [{"role": "user", "content": text}], **params}
        return httpx.post(f"{self.url}/v1/chat/completions", json=body, timeout=60)

    def export(self, kind: str = "interactions") -> list[dict]:
        """Every row of the admin export (`interactions` or `feedback`), all pages."""
        rows, after = [], None
        while True:
            page = self.admin("GET", f"/{kind}", params={"limit": 1000, **({"after": after} if after else {})})
            assert page.status_code == 200, page.text
            body = page.json()
            rows += body["data"]
            if not body["has_more"]:
                return rows
            after = body["next_cursor"]

    @staticmethod
    def alive(pid: int) -> bool:
        """Whether process `pid` still runs (a zombie does not count)."""
        try:
            return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][0] not in "ZX"
        except OSError:
            return False

    def engine_pids(self) -> list[int]:
        """The gateway's child processes (the transformers engine's decoding process)."""
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                if int(stat.read_text().rsplit(") ", 1)[1].split()[1]) == self.proc.pid:
                    found.append(int(stat.parent.name))
            except (OSError, IndexError, ValueError):
                pass
        return found


def _gateways() -> Iterator[Callable[..., Gateway]]:
    started: list[Gateway] = []

    def start(run_dir: Path, *flags: str, **kwargs) -> Gateway:
        server = Gateway(run_dir, *flags, **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def gateway() -> Iterator[Callable[..., Gateway]]:
    """`gateway(run_dir, *flags, log_dir=None)` -> a started Gateway, stopped (or already killed) at the test's end."""
    yield from _gateways()


@pytest.fixture(scope="module")
def module_gateway() -> Iterator[Callable[..., Gateway]]:
    """`gateway` for a server that a whole test module shares."""
    yield from _gateways()
