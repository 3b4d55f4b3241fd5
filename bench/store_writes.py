"""Benchmark: logging interactions from concurrent requests, a transaction per request vs the writer thread.

Each writer logs one chat choice (a realistic row) with an image reference, as the gateway does
after every answer, and waits for its commit. "thread per request" runs `Store.add_interactions`
from each caller's own thread (the gateway's way before `serve/store/writer.py`): concurrent
commits meet SQLite's write lock and its busy handler's sleeps. "writer thread" submits to one
`StoreWriter`, which commits whatever waits in one transaction. Real SQLite files (WAL,
synchronous=FULL) in a temporary folder; both ways run in one process, alternating.

    .venv/bin/python bench/store_writes.py [--writes 320] [--rounds 3]
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/serve.py is named like the `serve` package: keep this folder off the import path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import itertools
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from serve.store import Store
from serve.store.writer import StoreWriter

_ids = itertools.count()


def interaction() -> dict:
    """One logged choice of a ShapeWorld image question (sizes as the gateway writes them)."""
    return dict(id=f"chatcmpl-{next(_ids)}", choice_index=0, created=time.time(), model="openvlthinker",
                adapter_version=None, effort="auto", mode="think", budget=256, budget_hit=False,
                request={"messages": [{"role": "user", "content": [{"type": "image", "sha256": "ab" * 32},
                                                                  {"type": "text", "text": "How many circles? " * 3}]}],
                         "params": {"temperature": 0.0, "max_tokens": 64}},
                meta={}, problem_type="math", task_type="math", has_reference=False,
                thinking="There are 4 objects. 2 are circles. 4 - 2 = 2.", answer="2",
                text="<thinking>There are 4 objects. 2 are circles. 4 - 2 = 2.</thinking><answer>2</answer>",
                prompt_token_ids=list(range(80)), completion_token_ids=list(range(25)), logprobs=[-0.1] * 25,
                finish_reason="stop", prompt_tokens=80, completion_tokens=25, reasoning_tokens=20, latency_s=0.1,
                stream=False)


def measure(write, writes: int, concurrency: int) -> dict[str, float]:
    """Commits per second and per-write latency percentiles (ms) with `concurrency` callers."""
    def one(_: int) -> float:
        start = time.perf_counter()
        write()
        return time.perf_counter() - start

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        latencies = sorted(pool.map(one, range(writes)))
    wall = time.perf_counter() - start
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * (len(latencies) - 1)))] * 1e3  # noqa: E731
    return {"rate": writes / wall, "p50": pick(0.5), "p99": pick(0.99), "max": latencies[-1] * 1e3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=320)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=Path(__file__).resolve().parents[1]) as tmp:  # the repository's disk
        store = Store(f"sqlite:///{tmp}/serve.db", Path(tmp) / "images")
        writer = StoreWriter(store)
        ways = {"thread per request": lambda: store.add_interactions([interaction()]),
                "writer thread": lambda: writer.submit([], [interaction()]).result()}
        results: dict[tuple[str, int], list[dict]] = {}
        for _ in range(args.rounds):
            for concurrency in (1, 4, 16):
                for name, write in ways.items():
                    results.setdefault((name, concurrency), []).append(measure(write, args.writes, concurrency))
        writer.close()
        store.close()
    print(f"{args.writes} interaction writes per round, {args.rounds} alternating rounds (median round), "
          "SQLite WAL synchronous=FULL")
    print(f"{'writers':>7}  {'way':<20}{'commits/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    for concurrency in (1, 4, 16):
        rows = {}
        for name in ways:
            runs = results[name, concurrency]
            rows[name] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            r = rows[name]
            print(f"{concurrency:>7}  {name:<20}{r['rate']:>10.0f}{r['p50']:>9.2f}{r['p99']:>9.2f}{r['max']:>9.2f}")
        a, b = rows["thread per request"], rows["writer thread"]
        print(f"{'':>9}writer / thread per request: commits/s {b['rate'] / a['rate']:.2f}x, "
              f"p99 latency {b['p99'] / a['p99']:.2f}x")


if __name__ == "__main__":
    main()
