"""Advantage estimators: vectorised versions agree with plain per-group loops."""

import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from openvlthinker.rl import (
    ADVANTAGES,
    dr_grpo_advantages,
    g2rpo_advantages,
    get_advantage,
    grpo_advantages,
    informative_groups,
    rloo_advantages,
)
from openvlthinker.rl.reference import apply_per_key as loop_by_key
from openvlthinker.rl.reference import reference_g2rpo as loop_g2rpo


def loop_grpo(vals):
    m = sum(vals) / len(vals)
    sd = (sum((v - m) ** 2 for v in vals) / len(vals)) ** 0.5
    return [(v - m) / (sd + 1e-6) for v in vals]


def loop_rloo(vals):
    n = len(vals)
    return [0.0] * n if n == 1 else [v - (sum(vals) - v) / (n - 1) for v in vals]


@st.composite
def batches(draw):
    n_groups = draw(st.integers(1, 12))
    rewards, groups, tasks = [], [], []
    for g in range(n_groups):
        size = draw(st.integers(1, 8))
        task = draw(st.sampled_from(["math", "ocr", "grounding"]))
        kind = draw(st.sampled_from(["binary", "graded", "continuous"]))
        for _ in range(size):
            if kind == "binary":
                rewards.append(float(draw(st.integers(0, 1))))
            elif kind == "graded":
                rewards.append(draw(st.integers(0, 4)) / 4)
            else:
                rewards.append(draw(st.floats(0, 1, allow_nan=False)))
            groups.append(f"g{g}")
            tasks.append(task)
    order = draw(st.permutations(range(len(rewards))))
    return [rewards[i] for i in order], [groups[i] for i in order], [tasks[i] for i in order]


@settings(max_examples=150, deadline=None)
@given(batches())
def test_g2rpo_matches_loop(batch):
    rewards, groups, tasks = batch
    got = g2rpo_advantages(torch.tensor(rewards, dtype=torch.float64), groups, tasks)
    want = torch.tensor(loop_g2rpo(rewards, groups, tasks), dtype=torch.float64)
    assert torch.allclose(got, want, atol=1e-9)


@settings(max_examples=150, deadline=None)
@given(batches())
def test_baselines_match_loops(batch):
    rewards, groups, _ = batch
    r = torch.tensor(rewards, dtype=torch.float64)
    for fn, ref in ((grpo_advantages, loop_grpo), (rloo_advantages, loop_rloo),
                    (dr_grpo_advantages, lambda v: [x - sum(v) / len(v) for x in v])):
        assert torch.allclose(fn(r, groups), torch.tensor(loop_by_key(rewards, groups, ref), dtype=torch.float64), atol=1e-6)


@settings(max_examples=100, deadline=None)
@given(batches())
def test_g2rpo_has_zero_mean_per_task(batch):
    rewards, groups, tasks = batch
    adv = g2rpo_advantages(torch.tensor(rewards, dtype=torch.float64), groups, tasks)
    for task in set(tasks):
        sel = torch.tensor([t == task for t in tasks])
        assert abs(adv[sel].sum().item()) < 1e-8


def test_no_task_ids_means_one_task():
    r = torch.tensor([0.0, 1, 0, 0, 1, 1])
    g = [0, 0, 0, 1, 1, 1]
    assert torch.equal(g2rpo_advantages(r, g), g2rpo_advantages(r, g, ["t"] * 6))


def test_scale_free_across_reward_kinds():
    # Thumbs (0/1), stars (1..5) and continuous scores with the same order give the same advantages.
    g = [0] * 4
    thumbs = g2rpo_advantages(torch.tensor([0.0, 0, 1, 1]), g)
    stars = g2rpo_advantages(torch.tensor([1.0, 1, 5, 5]), g)
    assert torch.allclose(thumbs, stars)


def test_integer_tensor_ids_and_string_ids_agree():
    rng = random.Random(0)
    rewards = torch.tensor([rng.random() for _ in range(64)], dtype=torch.float64)
    gi = torch.arange(64) // 8
    ti = gi % 3
    a = g2rpo_advantages(rewards, gi, ti)
    b = g2rpo_advantages(rewards, [f"g{int(x)}" for x in gi], [f"t{int(x)}" for x in ti])
    assert torch.allclose(a, b)


def test_all_equal_groups_give_zero_for_every_estimator():
    r = torch.tensor([0.5] * 8)
    g = [0] * 4 + [1] * 4
    for fn in ADVANTAGES.values():
        assert fn(r, g).abs().max().item() == 0.0


def test_validation_errors():
    with pytest.raises(ValueError, match="group_ids has 2 entries"):
        g2rpo_advantages(torch.zeros(3), [0, 0])
    with pytest.raises(ValueError, match="task_ids has 1 entries"):
        g2rpo_advantages(torch.zeros(3), [0, 0, 0], ["a"])
    with pytest.raises(ValueError, match="finite"):
        grpo_advantages(torch.tensor([0.0, float("inf")]), [0, 0])
    with pytest.raises(ValueError, match="1-D"):
        rloo_advantages(torch.zeros(2, 2), [0, 0])
    with pytest.raises(ValueError, match="hashable"):
        g2rpo_advantages(torch.zeros(2), [[1], [2]])


def test_registry():
    assert set(ADVANTAGES) == {"g2rpo", "grpo", "dr_grpo", "rloo"}
    assert get_advantage("g2rpo") is g2rpo_advantages
    with pytest.raises(ValueError, match="unknown advantage 'ppo'; valid: 'g2rpo', 'grpo', 'dr_grpo', 'rloo'"):
        get_advantage("ppo")


def test_empty_batch():
    for fn in ADVANTAGES.values():
        assert fn(torch.zeros(0), []).numel() == 0


def test_informative_groups():
    acc = torch.tensor([1.0, 1, 1, 0, 1, 0, 0, 0, 0])
    g = [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert informative_groups(acc, g).tolist() == [False] * 3 + [True] * 3 + [False] * 3
