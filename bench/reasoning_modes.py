"""Benchmark: adaptive reasoning (`auto`) vs always thinking (`high`) on ShapeWorld eval.

Same model, same questions, greedy, one run: per task family the mean thinking tokens and
the accuracy under each policy, side by side. `auto` answers perception questions directly
and thinks (medium budget) on multi-step ones; `high` always thinks with the high budget.

    .venv/bin/python bench/reasoning_modes.py [--model PATH] [--per-family 50]
"""

from __future__ import annotations

import argparse
import time

import torch

from openvlthinker.evaluation import evaluate, load_eval_data, summarise
from openvlthinker.models import DEFAULT_MODEL, load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--per-family", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model, processor = load(args.model)
    data = load_eval_data(f"shapeworld:eval:{args.per_family}")
    results, times = {}, {}
    for effort in ("auto", "high"):
        start = time.perf_counter()
        results[effort] = summarise(evaluate(model, processor, data, effort=effort, batch_size=16, max_new_tokens=384))
        times[effort] = time.perf_counter() - start

    print(f"ShapeWorld eval, {args.per_family} per family, greedy; model {args.model}")
    print("| task | auto: thinking tok | auto: accuracy | always think: thinking tok | always think: accuracy |")
    print("|---|---:|---:|---:|---:|")
    for task in results["auto"]:
        a, h = results["auto"][task], results["high"][task]
        print(f"| {task} | {a['thinking_tokens']:.1f} | {a['accuracy']:.3f} | {h['thinking_tokens']:.1f} | {h['accuracy']:.3f} |")
    print(f"wall time: auto {times['auto']:.0f} s, always think {times['high']:.0f} s "
          f"({times['high'] / times['auto']:.2f}x)")


if __name__ == "__main__":
    main()
