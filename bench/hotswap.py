"""Benchmark: zero-downtime hot swap under load.

Starts `openvlthinker serve` on the tiny model and keeps 16 clients (`openai` SDK) chatting
with the served alias. First a steady-state phase, then a swap phase in which new LoRA
versions are published into the adapters folder and swapped in exactly as the RL loop does
(load -> promote -> unload the previous one), back to back. Prints the publish -> served
latency (until a client request is answered by the new version), request latency
percentiles during swaps vs steady state, and the failed requests.

    .venv/bin/python bench/hotswap.py [--swaps 10] [--steady-s 15]
"""

from __future__ import annotations

import sys
from pathlib import Path

# Keep bench/ off the path: bench/serve.py would shadow the `serve` package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import secrets
import statistics
import tempfile
import threading
import time

from openai import OpenAI

from online_rl.client import GatewayClient, image_part
from openvlthinker.models import DEFAULT_MODEL, random_lora
from openvlthinker.tiny.shapeworld import split
from openvlthinker.versions import publish
from serve.launcher import ServerProcess


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else float("nan")


class Load:
    """16 client threads chatting with the alias; each result is tagged with the phase it ended in."""

    def __init__(self, url: str, clients: int, max_tokens: int):
        samples = split("eval", 4)
        self.requests = [[{"role": "user", "content": [image_part(s.image), {"type": "text", "text": s.record.problem
                                                                              .replace("<image>", "").strip()}]}]
                         for s in samples]
        self.client = OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=120)
        self.max_tokens, self.phase, self.stop = max_tokens, "warmup", threading.Event()
        self.latencies: dict[str, list[float]] = {}
        self.failures: list[str] = []
        self.versions: list[tuple[float, str | None]] = []  # (end time, adapter version that answered)
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(clients)]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def _client(self, i: int) -> None:
        k = i
        while not self.stop.is_set():
            messages = self.requests[k % len(self.requests)]
            k += len(self.threads)
            start = time.perf_counter()
            try:
                resp = self.client.chat.completions.create(model="openvlthinker", messages=messages, temperature=0,
                                                           max_tokens=self.max_tokens)
                ok, version = True, getattr(resp, "adapter_version", None)
            except Exception as exc:  # noqa: BLE001 - every failure is counted and reported
                ok, version = False, None
                with self.lock:
                    self.failures.append(f"{type(exc).__name__}: {exc}"[:200])
            end = time.perf_counter()
            with self.lock:
                if ok:
                    self.latencies.setdefault(self.phase, []).append(end - start)
                    self.versions.append((time.monotonic(), version))

    def first_answer_by(self, version: str, since: float, timeout: float = 60) -> float:
        """Seconds from `since` (monotonic) until a request ending after it was answered by `version`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                hits = [t for t, v in self.versions if v == version and t >= since]
            if hits:
                return min(hits) - since
            time.sleep(0.005)
        raise TimeoutError(f"no request was answered by {version} within {timeout} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--swaps", type=int, default=10)
    parser.add_argument("--steady-s", type=float, default=15.0)
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        adapters, admin = root / "adapters", secrets.token_hex(8)
        sources = [random_lora(args.model, root / f"src{i}", seed=i, scale=0.01) for i in range(2)]
        server = ServerProcess(["--model", args.model, "--run-dir", str(root / "serve"), "--adapters-dir", str(adapters),
                                "--admin-key", admin, "--max-batch", "16", "--max-queue", "256",
                                "--log-level", "warning"], log_path=root / "serve.log")
        gateway = GatewayClient(server.url, "none", admin)
        load = Load(server.url, args.clients, args.max_tokens)
        try:
            # Steady state is the served state of a running loop: an adapter version promoted.
            publish(sources[0], adapters, 1)
            gateway.load("v0001")
            gateway.promote("v0001")
            load.start()
            time.sleep(3)
            load.phase = "steady"
            time.sleep(args.steady_s)
            load.phase = "swaps"
            swap_latency, admin_times = [], []
            previous = "v0001"
            for number in range(2, args.swaps + 2):
                version = f"v{number:04d}"
                since = time.monotonic()
                publish(sources[number % 2], adapters, number, parent=previous)
                t0 = time.perf_counter()
                gateway.load(version)
                gateway.promote(version)
                admin_times.append(time.perf_counter() - t0)
                swap_latency.append(load.first_answer_by(version, since))
                if previous:
                    gateway.unload(previous)
                previous = version
            load.phase = "after"
            time.sleep(2)
        finally:
            load.stop.set()
            for t in load.threads:
                t.join(timeout=120)
            server.stop()

    steady, swaps = load.latencies.get("steady", []), load.latencies.get("swaps", [])
    print(f"{args.clients} clients, tiny model, greedy, max_tokens={args.max_tokens}, {args.swaps} swaps "
          "(publish -> load -> promote -> unload the previous version)")
    print(f"publish -> first answer by the new version: p50 {statistics.median(swap_latency) * 1e3:.0f} ms, "
          f"max {max(swap_latency) * 1e3:.0f} ms (load + promote calls: p50 {statistics.median(admin_times) * 1e3:.0f} ms)")
    print(f"{'phase':<10}{'requests':>10}{'p50 ms':>9}{'p99 ms':>9}")
    for name, values in (("steady", steady), ("swaps", swaps)):
        print(f"{name:<10}{len(values):>10}{percentile(values, 0.5) * 1e3:>9.0f}{percentile(values, 0.99) * 1e3:>9.0f}")
    print(f"p99 during swaps / steady: {percentile(swaps, 0.99) / percentile(steady, 0.99):.2f}x; "
          f"failed requests: {len(load.failures)}")
    for failure in load.failures[:5]:
        print("  ", failure)


if __name__ == "__main__":
    main()
