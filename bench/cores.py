"""Benchmark: how much one core's torch work slows down while the other core does torch work too.

The serving benchmarks run the engine, the gateway and the client on the same small machine.
Whether its cores are independent decides what a second busy process costs the engine. This runs
the engine's typical operations (a joining step's projection, a decoding step's norm) pinned to
the first core: alone, next to a pure-Python loop on the second core, and next to a torch matmul
loop there, alternating, and prints the median of the rounds and the slowdowns (the median, not
the best: a neighbour's cost is what a typical moment pays). Linux only (CPU affinity).

    .venv/bin/python bench/cores.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

NEIGHBOURS = {
    "alone": None,
    "python loop on the other core": "while True: pass",
    "torch matmul loop on the other core": "import torch\ntorch.set_num_threads(1)\na = torch.randn(256, 256)\n"
                                           "while True: a @ a",
}


def per_call_us(fn, calls: int = 3000) -> float:
    """Microseconds per call of `fn` (after a warm-up)."""
    for _ in range(100):
        fn()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        sys.exit("needs two cores")
    os.sched_setaffinity(0, {cores[0]})
    torch.set_num_threads(1)
    x, w = torch.randn(57, 128), torch.randn(768, 128)  # 16 decoding rows + a 41-token prompt, gate/up
    h, norm = torch.randn(16, 1, 128), torch.randn(128)
    ops = {"linear 57x128 -> 768": lambda: F.linear(x, w), "rms_norm 16x128": lambda: F.rms_norm(h, (128,), norm, 1e-6)}
    times: dict[tuple[str, str], list[float]] = {(n, o): [] for n in NEIGHBOURS for o in ops}
    for _ in range(args.rounds):
        for name, code in NEIGHBOURS.items():
            neighbour = None
            if code is not None:
                pin = f"import os\nos.sched_setaffinity(0, {{{cores[1]}}})\n"
                neighbour = subprocess.Popen([sys.executable, "-c", pin + code])
                time.sleep(0.5)
            try:
                for op, fn in ops.items():
                    times[name, op].append(per_call_us(fn))
            finally:
                if neighbour is not None:
                    neighbour.kill()
                    neighbour.wait()
    median = {key: statistics.median(values) for key, values in times.items()}
    print(f"torch ops pinned to core {cores[0]}, median of {args.rounds} alternating rounds (us per call, slowdown)")
    for op in ops:
        alone = median["alone", op]
        print(f"{op:<22}" + "".join(f"   {n}: {median[n, op]:7.1f} ({median[n, op] / alone:.2f}x)" for n in NEIGHBOURS))


if __name__ == "__main__":
    main()
