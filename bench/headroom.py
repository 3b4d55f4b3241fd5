"""Diagnostic: how much room the served model leaves for RL on fresh questions, and what its errors are.

A fresh `openvlthinker serve` on the shipped tiny model answers `--per-family` held-out ShapeWorld
questions per family (the eval split past the gate's, as bench/learning.py scores) once greedily
and `--samples` times at temperature 1.0. Printed per family: greedy accuracy, the sampled mean,
pass@k (some sample scores >= 0.5), the share of questions the greedy answer misses while some
sample gets, and the share where most samples are right (what sharpening alone could turn into
greedy gains). For math, each wrong greedy answer's trace is checked against the scene: a trace
whose arithmetic is right on wrong counts is a perception error, which an adapter on the language
model alone has little to work on.

    .venv/bin/python bench/headroom.py [--per-family 40] [--samples 8]
"""

from __future__ import annotations

import sys
from pathlib import Path

# Keep bench/ off the path: bench/serve.py would shadow the `serve` package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import re
import secrets
import tempfile
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from online_rl.client import GatewayClient
from online_rl.evaluate import graded_accuracy, messages_for, metadata_for
from online_rl.prompts import Prompt, held_out_prompts
from openvlthinker.models import DEFAULT_MODEL
from openvlthinker.tiny.shapeworld import FAMILIES
from serve.launcher import ServerProcess

_ARITH = re.compile(r"(-?\d+) ([+-]) (-?\d+) = (-?\d+)")


def perception_error(thinking: str, answer: str) -> bool | None:
    """For a wrong math answer: True when the trace's arithmetic is right and the answer follows it (the counts
    were wrong), False when the arithmetic or the copy to the answer is wrong, None without arithmetic."""
    found = _ARITH.search(thinking)
    if not found:
        return None
    a, op, b, result = found.groups()
    value = int(a) + int(b) if op == "+" else int(a) - int(b)
    return value == int(result) and answer.strip() == result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-family", type=int, default=40)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    args = ap.parse_args()
    if args.per_family < 1 or args.samples < 1:
        ap.error("--per-family and --samples must be >= 1")
    prompts = held_out_prompts(args.per_family)
    with tempfile.TemporaryDirectory() as tmp:
        admin = secrets.token_hex(8)
        server = ServerProcess(["--model", args.model, "--run-dir", f"{tmp}/serve", "--adapters-dir", f"{tmp}/ad",
                                "--admin-key", admin, "--max-batch", "16", "--log-level", "warning"],
                               log_path=Path(tmp) / "serve.log")
        try:
            client = GatewayClient(server.url, "none", admin)

            def one(p: Prompt):
                meta = metadata_for(p.record, source="rl-gate")
                greedy = client.chat(messages_for(p), model="openvlthinker", temperature=0.0, max_tokens=128,
                                     metadata=meta)["choices"][0]["message"]
                sampled = client.chat(messages_for(p), model="openvlthinker", temperature=1.0, n=args.samples,
                                      max_tokens=128, metadata=meta, seed=0)["choices"]
                return (graded_accuracy(p, greedy), [graded_accuracy(p, c["message"]) for c in sampled],
                        greedy.get("reasoning_content") or "", greedy.get("content") or "")

            with ThreadPoolExecutor(4) as pool:
                rows = list(pool.map(one, prompts))
        finally:
            server.stop()
    tasks = np.array([p.record.task for p in prompts])
    greedy = np.array([r[0] for r in rows])
    sampled = np.array([r[1] for r in rows])
    k = args.samples
    print(f"{args.per_family} held-out questions per family; greedy and {k} samples at temperature 1.0")
    print(f"{'family':18s} {'greedy':>7s} {'mean@' + str(k):>7s} {'pass@' + str(k):>7s} {'missed':>7s} {'mostly':>7s}")
    for t in FAMILIES:
        g, s = greedy[tasks == t], sampled[tasks == t]
        hit = s >= 0.5
        print(f"{t:18s} {g.mean():7.3f} {s.mean():7.3f} {hit.any(1).mean():7.3f} "
              f"{((g < 0.5) & hit.any(1)).mean():7.3f} {(hit.mean(1) > 0.5).mean():7.3f}")
    wrong = [(r[2], r[3]) for r, t in zip(rows, tasks) if t == "math_reasoning" and r[0] < 0.5]
    kinds = [perception_error(th, ans) for th, ans in wrong]
    print(f"math: {len(wrong)} wrong greedy answers; right arithmetic on wrong counts {kinds.count(True)}, "
          f"arithmetic or copy wrong {kinds.count(False)}, no arithmetic {kinds.count(None)}")
    print("missed: greedy < 0.5 while some sample >= 0.5; mostly: more than half the samples >= 0.5")


if __name__ == "__main__":
    main()
