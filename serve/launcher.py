"""Start `openvlthinker serve` as a child process and wait until it answers /health.

Used by `openvlthinker up` (server + demo + RL loop in one command), the benchmarks and the
end-to-end tests, so they all launch the gateway the same way a user does.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

import httpx


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ensure_port_free(host: str, port: int, option: str = "--port") -> None:
    """Raise ValueError naming `option` when something already listens on host:port (e.g. an older gateway)."""
    if port == 0:
        return
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    with socket.socket(family, kind, proto) as sock:
        # as uvicorn binds: SO_REUSEADDR, so a socket in TIME_WAIT after a clean stop does not count
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            raise ValueError(f"{host}:{port} is already in use ({exc.strerror}); stop whatever listens there "
                             f"(an older gateway or demo?) or pass another {option}") from None


def wait_for_url(proc: subprocess.Popen, url: str, timeout: float, interval: float = 0.2) -> bool:
    """True once GET `url` answers 200; False when `proc` exits first or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        time.sleep(interval)
    return False


class ServerProcess:
    """`openvlthinker serve ARGS --port P` in a subprocess; `stop()` is Ctrl-C, `kill()` is kill -9."""

    def __init__(self, args: Sequence[str], *, log_path: str | Path, port: int | None = None,
                 host: str = "127.0.0.1", timeout: float = 120, env: dict[str, str] | None = None):
        if port:
            # otherwise an older server on this port would answer /health for the new one
            ensure_port_free(host, port)
        self.port = port or free_port()
        self.url = f"http://{host}:{self.port}"
        self.log_path = Path(log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "openvlthinker.cli", "serve", "--host", host, "--port", str(self.port), *args]
        full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1",
                    **(env or {})}
        self._log = open(self.log_path, "w+b")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=full_env)
        try:
            self.wait_ready(timeout)
        except BaseException:
            # Ctrl-C (or a failure) during start-up: the caller never gets a handle, so the
            # child must not outlive this constructor.
            self.kill()
            self._log.close()
            raise

    def wait_ready(self, timeout: float) -> None:
        """Block until /health answers 200; raise with the server's last log lines if it dies or times out."""
        if wait_for_url(self.proc, f"{self.url}/health", timeout, interval=0.1):
            return
        if self.proc.poll() is not None:
            raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.output()}")
        self.kill()
        raise TimeoutError(f"server did not start in {timeout} s:\n{self.output()}")

    def output(self, chars: int = 5000) -> str:
        """The end of the server's log."""
        return self.log_path.read_bytes().decode(errors="replace")[-chars:]

    def stop(self, timeout: float = 20) -> None:
        """Graceful stop (SIGINT, as Ctrl-C), then SIGKILL if it does not exit in time."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()

    def kill(self) -> None:
        """kill -9, as a crash would."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
