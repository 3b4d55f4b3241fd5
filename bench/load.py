"""Load: N concurrent clients for T seconds against `openvlthinker serve` on the tiny model (loopback).

Starts the gateway (its defaults, but `--max-tokens` short answers), then runs `--clients`
asyncio clients (aiohttp, one keep-alive connection each) that send chat completions back to
back until `--duration` seconds have passed. A client told 503 or 429 waits the Retry-After it
was given (as the OpenAI SDK does; `--no-wait` retries at once) and sends again. Every response
must be a 200, or a 503/429 with a Retry-After header; a 5xx of any other kind, a 503 without
Retry-After or a reset connection fails the run (exit code 1).

Printed: the counts per status, latency p50/p99 (of the 200s, and of all answers), the
gateway's and its engine process's resident memory before (after one warm-up request) and
after, and how many interactions the store holds (each 200 is one). The clients run on the
same cores as the server, so their CPU counts against its throughput.

    .venv/bin/python bench/load.py [--clients 200] [--duration 60] [--max-tokens 8] [--no-wait] [-- SERVE FLAGS]
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/serve.py is named like the `serve` package: keep this folder off the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import asyncio
import statistics
import tempfile
import time
from collections import Counter

import aiohttp
import httpx

from serve.launcher import ServerProcess

ADMIN = "adm-load"
QUESTIONS = ["How many circles are there?", "What colour is the square?", "Is the triangle left of the circle?",
             "How many objects are left if all circles are removed?"]


def rss_mib(pid: int) -> float:
    """Resident memory of one process, MiB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def children(pid: int) -> list[int]:
    """Processes whose parent is `pid` (any of its threads may have started them)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(") ", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            pass
    return found


def memory(pid: int) -> dict[str, float]:
    """RSS of the gateway and of its child processes (the transformers engine decodes in one)."""
    return {"gateway": rss_mib(pid), "engine": sum(rss_mib(c) for c in children(pid))}


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def client(k: int, session: aiohttp.ClientSession, url: str, deadline: float, max_tokens: int,
                 wait: bool, out: dict) -> None:
    body = {"model": "openvlthinker", "max_tokens": max_tokens, "temperature": 0.7,
            "messages": [{"role": "user", "content": QUESTIONS[k % len(QUESTIONS)]}]}
    while time.monotonic() < deadline:
        start = time.monotonic()
        try:
            async with session.post(f"{url}/v1/chat/completions", json=body) as resp:
                await resp.read()
                status, retry_after = resp.status, resp.headers.get("Retry-After")
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            out["errors"][type(exc).__name__] += 1
            continue
        elapsed = time.monotonic() - start
        out["status"][status] += 1
        out["latency"].append(elapsed)
        if status == 200:
            out["latency_ok"].append(elapsed)
        elif status in (429, 503):
            if retry_after is None:
                out["errors"][f"{status} without Retry-After"] += 1
            elif wait:
                await asyncio.sleep(min(float(retry_after), max(0.0, deadline - time.monotonic())))


async def load(url: str, clients: int, duration: float, max_tokens: int, wait: bool) -> dict:
    out = {"status": Counter(), "errors": Counter(), "latency": [], "latency_ok": []}
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        deadline = time.monotonic() + duration
        started = time.monotonic()
        await asyncio.gather(*(client(k, session, url, deadline, max_tokens, wait, out) for k in range(clients)))
        out["wall_s"] = time.monotonic() - started
    return out


def stored(url: str) -> int:
    total, after = 0, None
    while True:
        page = httpx.get(f"{url}/v1/interactions", params={"limit": 1000, **({"after": after} if after else {})},
                         headers={"Authorization": f"Bearer {ADMIN}"}, timeout=60).json()
        total += len(page["data"])
        if not page["has_more"]:
            return total
        after = page["next_cursor"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--no-wait", dest="wait", action="store_false", help="retry a 503/429 at once")
    parser.add_argument("serve_flags", nargs="*", help="more `openvlthinker serve` flags (after --)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(["--run-dir", f"{tmp}/run", "--admin-key", ADMIN, "--log-level", "warning",
                                *args.serve_flags], log_path=f"{tmp}/serve.log")
        try:
            warm = httpx.post(f"{server.url}/v1/chat/completions", timeout=60, json={
                "model": "openvlthinker", "max_tokens": args.max_tokens,
                "messages": [{"role": "user", "content": QUESTIONS[0]}]})
            assert warm.status_code == 200, warm.text
            before = memory(server.proc.pid)
            out = asyncio.run(load(server.url, args.clients, args.duration, args.max_tokens, args.wait))
            after = memory(server.proc.pid)
            alive = server.proc.poll() is None
            rows = stored(server.url) - 1  # less the warm-up
        finally:
            server.stop()
        report(args, out, before, after, alive, rows)
        bad = sum(n for s, n in out["status"].items() if s >= 500 and s != 503) + sum(out["errors"].values())
        if bad or not alive:
            print(f"FAILED: {bad} answers that are neither a 200 nor a 503/429 with Retry-After"
                  f"{'' if alive else ', and the gateway died'}\n{server.output(3000)}")
            return 1
        print("OK: every answer was a 200 or a 503/429 with Retry-After; the gateway served throughout")
        return 0


def report(args, out: dict, before: dict, after: dict, alive: bool, rows: int) -> None:
    answers = sum(out["status"].values())
    ok = out["status"].get(200, 0)
    print(f"{args.clients} clients for {args.duration:.0f} s (max_tokens {args.max_tokens}, "
          f"{'waiting Retry-After' if args.wait else 'retrying at once'}): {answers} answers in {out['wall_s']:.1f} s, "
          f"{ok / out['wall_s']:.1f} 200s/s")
    print("  status:  " + ", ".join(f"{s}: {n}" for s, n in sorted(out["status"].items()))
          + (f"; transport errors: {dict(out['errors'])}" if out["errors"] else "; transport errors: 0"))
    print(f"  latency of the 200s: p50 {percentile(out['latency_ok'], 0.5) * 1000:.0f} ms, "
          f"p99 {percentile(out['latency_ok'], 0.99) * 1000:.0f} ms; of all answers: "
          f"p50 {percentile(out['latency'], 0.5) * 1000:.0f} ms, p99 {percentile(out['latency'], 0.99) * 1000:.0f} ms"
          + (f", mean {statistics.mean(out['latency']) * 1000:.0f} ms" if out["latency"] else ""))
    print(f"  RSS before: gateway {before['gateway']:.0f} MiB, engine {before['engine']:.0f} MiB; after: gateway "
          f"{after['gateway']:.0f} MiB, engine {after['engine']:.0f} MiB")
    print(f"  store: {rows} interactions written for {ok} answers of 200; gateway alive after the load: {alive}")


if __name__ == "__main__":
    sys.exit(main())
