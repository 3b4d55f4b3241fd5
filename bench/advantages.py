"""Benchmark: vectorised g2rpo_advantages vs a per-group Python loop, same inputs, one run.

8 192 groups x 8 responses (65 536), 6 tasks, rewards mixing binary and continuous
graders. Prints both times, the ratio, and checks the two agree.

    .venv/bin/python bench/advantages.py
"""

from __future__ import annotations

import argparse
import time

import torch

from openvlthinker.rl import g2rpo_advantages, gaussian_rank
from openvlthinker.rl.ranks import round_for_ties
from openvlthinker.rl.reference import apply_per_key, reference_g2rpo

TASKS = ["spatial_grounding", "spatial_reasoning", "general_vqa", "math_reasoning", "chart", "ocr"]


def loop_g2rpo(rewards: torch.Tensor, group_ids: list[str], task_ids: list[str]) -> torch.Tensor:
    """Per-group loop over the library primitive: one gaussian_rank call per group, then per task."""
    r = rewards.double()
    stage1 = torch.tensor(apply_per_key(r.tolist(), group_ids, lambda v: gaussian_rank(torch.tensor(v)).tolist()))
    stage1 = torch.from_numpy(round_for_ties(stage1.numpy()))
    out = apply_per_key(stage1.tolist(), task_ids, lambda v: gaussian_rank(torch.tensor(v)).tolist())
    return torch.tensor(out, dtype=rewards.dtype)


def make_inputs(groups: int, size: int, seed: int) -> tuple[torch.Tensor, list[str], list[str]]:
    """Rewards for `groups` prompt groups of `size`: binary for half the tasks, graded for the rest."""
    gen = torch.Generator().manual_seed(seed)
    task_of_group = torch.randint(len(TASKS), (groups,), generator=gen)
    task_idx = task_of_group.repeat_interleave(size)
    continuous = torch.rand(groups * size, generator=gen)
    binary = (continuous > 0.5).float()
    rewards = torch.where(task_idx % 2 == 0, binary, continuous)
    group_ids = [f"prompt-{g}" for g in range(groups) for _ in range(size)]
    task_ids = [TASKS[int(t)] for t in task_idx]
    return rewards, group_ids, task_ids


def best_of(fn, repeats: int) -> tuple[float, torch.Tensor]:
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=8192)
    parser.add_argument("--size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rewards, group_ids, task_ids = make_inputs(args.groups, args.size, args.seed)
    int_groups = torch.arange(rewards.numel()) // args.size
    int_tasks = torch.tensor([TASKS.index(t) for t in task_ids])
    g2rpo_advantages(rewards[:64], group_ids[:64], task_ids[:64])  # warm-up
    t_vec, vec = best_of(lambda: g2rpo_advantages(rewards, group_ids, task_ids), args.repeats)
    t_int, vec_int = best_of(lambda: g2rpo_advantages(rewards, int_groups, int_tasks), args.repeats)
    t_loop, loop = best_of(lambda: loop_g2rpo(rewards, group_ids, task_ids), 1)
    t_ref, ref = best_of(lambda: torch.tensor(reference_g2rpo(rewards.tolist(), group_ids, task_ids)), 1)
    max_diff = max((vec - other.to(vec.dtype)).abs().max().item() for other in (vec_int, loop, ref))

    n = rewards.numel()
    print(f"g2rpo_advantages on {n} responses ({args.groups} groups x {args.size}, {len(TASKS)} tasks), "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    rows = [
        (f"vectorised, string ids (best of {args.repeats})", t_vec),
        (f"vectorised, int tensor ids (best of {args.repeats})", t_int),
        ("loop: gaussian_rank per group, then per task", t_loop),
        ("loop: plain-Python reference (the tests' oracle)", t_ref),
    ]
    print(f"{'implementation':<52}{'time (ms)':>11}{'/ string ids':>14}{'/ int ids':>11}")
    for name, t in rows:
        print(f"{name:<52}{t * 1e3:>11.1f}{t / t_vec:>13.1f}x{t / t_int:>10.1f}x")
    print(f"max |difference| between all four: {max_diff:.2e}")

if __name__ == "__main__":
    main()
