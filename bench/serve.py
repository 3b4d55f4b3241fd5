"""Benchmark: gateway throughput and latency at 1, 4 and 16 concurrent clients vs one at a time.

Starts `openvlthinker serve` on the tiny model, sends the same ShapeWorld image questions
(greedy, fixed max_tokens, reasoning_effort auto) first strictly one after another, then
from 1, 4 and 16 concurrent clients through the official `openai` SDK. It does so twice in
one run and prints the two side by side: `--compare engine` (default), the engine in its own
process (the default) and in a thread of the gateway (`--engine-thread`); `--compare http`,
uvicorn's C HTTP parser and event loop (httptools and uvloop; `pip install` them first) and the
pure-Python ones (`--http h11 --loop asyncio`, what the project installs).

The clients run on the server's two cores, so their own CPU counts against the server's
throughput. `--client http` sends the same JSON bodies over plain keep-alive HTTP connections
(`http.client`, one per client thread) instead of the SDK, which costs the client less CPU per
request: what the server alone sustains, as with clients on other machines.

The last column is the CPU ceiling: the requests per second the machine's cores would serve if
they did nothing but this, at the CPU per request the row measured (gateway + engine + client),
as a multiple of the sequential rate. No schedule of the same work beats it on this machine.

`--repeats N` runs the whole sequence (sequential, 1, 4, 16 clients) N times on the same server,
one after another, and prints each row's median: the machine's speed drifts between passes, and
a ratio of two single passes moves with it.

    .venv/bin/python bench/serve.py [--model PATH] [--requests 96] [--repeats 1] [--client sdk|http] [--compare engine|http]
"""

from __future__ import annotations

import sys
from pathlib import Path

# This script is named like the `serve` package it benchmarks: keep its own folder off the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import http.client
import json
import os
import statistics
import threading
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from openai import OpenAI

from online_rl.client import image_part
from openvlthinker.models import DEFAULT_MODEL
from openvlthinker.tiny.shapeworld import FAMILIES, split
from serve.launcher import ServerProcess


def make_requests(n: int) -> list[list[dict]]:
    """n chat requests: one ShapeWorld image and its question each, families interleaved."""
    samples = split("eval", (n + len(FAMILIES) - 1) // len(FAMILIES))[:n]
    return [[{"role": "user", "content": [
        image_part(s.image),
        {"type": "text", "text": s.record.problem.replace("<image>", "").strip()},
    ]}] for s in samples]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) so far of process `pid` ("gateway") and of its children ("engine", when the
    engine runs in its own process; in a thread it is part of the gateway's figure); Linux /proc."""
    def one(p: int) -> float:
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    try:
        children = [int(c) for t in os.listdir(f"/proc/{pid}/task")
                    for c in Path(f"/proc/{pid}/task/{t}/children").read_text().split()]
        return {"gateway": one(pid), **({"engine": sum(one(c) for c in children)} if children else {})}
    except (OSError, ValueError, IndexError):  # not Linux, or a process just ended: no CPU columns
        return {}


class SDKClient:
    """Chat completions through the official SDK; returns the completion's token count."""

    def __init__(self, url: str):
        self.sdk = OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=300)

    def __call__(self, messages: list[dict], max_tokens: int) -> int:
        resp = self.sdk.chat.completions.create(model="openvlthinker", messages=messages, max_tokens=max_tokens,
                                                temperature=0)
        return resp.usage.completion_tokens


class HTTPClient:
    """The same request bodies over one keep-alive `http.client` connection per thread."""

    def __init__(self, url: str):
        self.host, self.port = url.removeprefix("http://").split(":")
        self.local = threading.local()

    def __call__(self, messages: list[dict], max_tokens: int) -> int:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = self.local.conn = http.client.HTTPConnection(self.host, int(self.port), timeout=300)
        body = json.dumps({"model": "openvlthinker", "messages": messages, "max_tokens": max_tokens, "temperature": 0})
        conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {data[:200]!r}")
        return json.loads(data)["usage"]["completion_tokens"]


CLIENTS = {"sdk": SDKClient, "http": HTTPClient}


def run(client, requests: list[list[dict]], concurrency: int, max_tokens: int,
        server_pid: int | None = None) -> dict[str, float]:
    """Send every request with `concurrency` clients; throughput, latency and CPU per request figures."""
    latencies: list[float] = []
    tokens: list[int] = []

    def one(messages):
        start = time.perf_counter()
        completion_tokens = client(messages, max_tokens)
        latencies.append(time.perf_counter() - start)
        tokens.append(completion_tokens)

    cpu_before = cpu_seconds(server_pid) if server_pid else {}
    client_before = time.process_time()
    start = time.perf_counter()
    if concurrency == 0:  # strictly sequential: no overlap at all
        for messages in requests:
            one(messages)
    else:
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(one, requests))
    wall = time.perf_counter() - start
    out = {"wall": wall, "rps": len(requests) / wall, "tps": sum(tokens) / wall,
           "p50": statistics.median(latencies), "p99": percentile(latencies, 0.99),
           "client_ms": (time.process_time() - client_before) * 1e3 / len(requests)}
    cpu_after = cpu_seconds(server_pid) if server_pid else {}
    if cpu_before and cpu_after:
        for part in cpu_before.keys() & cpu_after.keys():
            out[f"{part}_ms"] = (cpu_after[part] - cpu_before[part]) * 1e3 / len(requests)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--requests", type=int, default=96)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="engine torch threads")
    parser.add_argument("--compare", choices=sorted(COMPARISONS), default="engine",
                        help="engine: own process vs gateway thread; http: httptools+uvloop vs h11+asyncio")
    parser.add_argument("--client", choices=sorted(CLIENTS), default="sdk",
                        help="sdk: the official openai SDK; http: plain keep-alive HTTP (less client CPU)")
    parser.add_argument("--repeats", type=int, default=1, help="passes of the whole sequence per server; medians")
    args = parser.parse_args()
    if args.requests < 1 or args.repeats < 1 or args.max_tokens < 1 or args.threads < 1:
        parser.error("--requests, --repeats, --max-tokens and --threads must be at least 1")

    if args.compare == "http":
        from serve.config import ServeConfig

        try:  # the server's own check of the C stack, before a run that would fail to start it
            ServeConfig(http="httptools", loop="uvloop")
        except ValueError as exc:
            parser.error(f"--compare http: {exc}")
    requests = make_requests(args.requests)
    passes = {name: serve_and_measure(args, requests, extra) for name, extra in COMPARISONS[args.compare]}
    results = {name: [(label, median_row([p[i] for p in runs])) for i, label in enumerate(LABELS)]
               for name, runs in passes.items()}
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    print(f"{args.requests} image chat requests, max_tokens={args.max_tokens}, greedy, tiny model, "
          f"engine threads={args.threads}, max-batch 16, client {args.client}, {cores} cores"
          + (f", median of {args.repeats} passes" if args.repeats > 1 else ""))
    for name, rows in results.items():
        base = rows[0][1]
        print(f"\n{name}")
        print(f"{'clients':<16}{'req/s':>8}{'tok/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'throughput vs sequential':>27}"
              f"   CPU ms per request: {'gateway':>7}{'engine':>8}{'client':>8}   CPU ceiling vs sequential")
        for label, r in rows:
            parts = [r.get(k) for k in ("gateway_ms", "engine_ms", "client_ms")]
            cpu = "".join(f"{v:>8.1f}" if v is not None else f"{'-':>8}" for v in parts)
            known = [v for v in parts if v is not None]
            ceiling = f"{cores * 1e3 / sum(known) / base['rps']:>14.2f}x" if len(known) >= 2 else f"{'-':>15}"
            print(f"{label:<16}{r['rps']:>8.2f}{r['tps']:>9.0f}{r['p50'] * 1e3:>9.0f}{r['p99'] * 1e3:>9.0f}"
                  f"{r['rps'] / base['rps']:>26.2f}x{'':>20}{cpu}{'':>13}{ceiling}")
        if args.repeats > 1:
            print("16 clients vs sequential, pass by pass: "
                  + ", ".join(f"{p[-1]['rps'] / p[0]['rps']:.2f}x" for p in passes[name]))
    (a, proc), (b, thread) = results.items()
    print(f"\nthroughput, {a} / {b}: " + ", ".join(f"{label} {p['rps'] / t['rps']:.2f}x"
                                              for (label, p), (_, t) in zip(proc, thread)))


COMPARISONS = {
    "engine": [("engine in its own process (default)", []),
               ("engine in a gateway thread (--engine-thread)", ["--engine-thread"])],
    "http": [("httptools + uvloop (--http httptools --loop uvloop)", ["--http", "httptools", "--loop", "uvloop"]),
             ("h11 + asyncio (--http h11 --loop asyncio)", ["--http", "h11", "--loop", "asyncio"])],
}


CONCURRENCY = (0, 1, 4, 16)  # 0: strictly one after another
LABELS = [f"{c} concurrent" if c else "sequential" for c in CONCURRENCY]


def median_row(rows: list[dict[str, float]]) -> dict[str, float]:
    """Each figure's median over the passes (the figures a pass lacks stay out)."""
    return {k: statistics.median(r[k] for r in rows) for k in rows[0] if all(k in r for r in rows)}


def serve_and_measure(args: argparse.Namespace, requests: list[list[dict]], extra: list[str]) -> list[list[dict]]:
    """Start a server with `extra` flags; `args.repeats` passes of sequential, then 1, 4 and 16 clients."""
    with tempfile.TemporaryDirectory() as run_dir:
        server = ServerProcess(["--model", args.model, "--run-dir", run_dir, "--max-batch", "16", "--max-queue", "256",
                                "--threads", str(args.threads), "--log-level", "warning", *extra],
                               log_path=Path(run_dir) / "server.log")
        try:
            client = CLIENTS[args.client](server.url)
            run(client, requests[:8], 4, args.max_tokens)  # warm-up
            pid = server.proc.pid
            return [[run(client, requests, c, args.max_tokens, pid) for c in CONCURRENCY]
                    for _ in range(args.repeats)]
        finally:
            server.stop()


if __name__ == "__main__":
    main()
