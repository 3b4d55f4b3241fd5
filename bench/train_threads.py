"""Benchmark: one `train-tiny` SFT step on one torch thread against two, side by side in one run.

The step is the shipped recipe's (`TrainConfig` defaults: 24 examples, the vision tower frozen):
building the batch (ShapeWorld rendering, tokenising, collating) and the forward, backward and
optimizer step, timed apart. The thread counts alternate step by step, each on its own model and
optimizer from the same initialisation, so that a shared machine's drift hits both alike; the first
`--warmup` steps of each are not counted. Why the recipe trains on two threads:
docs/benchmarks.md#train-tiny.

    .venv/bin/python bench/train_threads.py [--steps 20] [--warmup 3]
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/serve.py is named like the `serve` package: keep this folder off the import path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import random
import statistics
import time

import torch

from openvlthinker.tiny.train import TrainConfig, build_untrained, sft_batch, sft_optimizer, sft_update


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per thread count")
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()

    cfg = TrainConfig(out_dir=Path("unused"))
    runs = {}
    for threads in (1, 2):
        torch.manual_seed(cfg.seed)
        model, tokenizer, processor = build_untrained(cfg)
        model.train()
        optim = sft_optimizer(model, cfg)
        runs[threads] = (model, optim, processor, tokenizer.pad_token_id, random.Random(cfg.seed))
    times = {threads: {"batch": [], "step": []} for threads in runs}
    for step in range(args.warmup + args.steps):
        for threads, (model, optim, processor, pad_id, rng) in runs.items():
            torch.set_num_threads(threads)
            start = time.perf_counter()
            batch = sft_batch(cfg, processor, pad_id, step, rng)
            built = time.perf_counter()
            sft_update(model, optim, batch)
            done = time.perf_counter()
            if step >= args.warmup:
                times[threads]["batch"].append(built - start)
                times[threads]["step"].append(done - built)
    med = {t: {k: statistics.median(v) for k, v in parts.items()} for t, parts in times.items()}
    print(f"train-tiny SFT step, batch {cfg.batch_size}, {args.steps} steps per thread count (median), "
          f"torch {torch.__version__}")
    print(f"{'threads':<9}{'batch s':>9}{'fwd+bwd+opt s':>15}{'step s':>9}")
    for t, m in med.items():
        print(f"{t:<9}{m['batch']:>9.3f}{m['step']:>15.3f}{m['batch'] + m['step']:>9.3f}")
    one, two = (med[t]["batch"] + med[t]["step"] for t in (1, 2))
    print(f"steps per second, two threads over one: {one / two:.2f}x "
          f"(forward, backward and optimizer alone: {med[1]['step'] / med[2]['step']:.2f}x)")


if __name__ == "__main__":
    main()
