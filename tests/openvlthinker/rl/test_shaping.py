"""Length envelope, dynamic length targets, token entropy and the entropy band penalty."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from openvlthinker.rl import LengthTargets, entropy_band_penalty, length_envelope, task_entropies, token_entropy


def test_envelope_trapezoid_points():
    x = torch.tensor([0.0, 10, 15, 20, 30, 40, 45, 50, 60])
    got = length_envelope(x, 10, 20, 40, 50).tolist()
    assert got == pytest.approx([0, 0, 0.5, 1, 1, 1, 0.5, 0, 0])


def test_envelope_degenerate_edges_and_scalar():
    assert length_envelope(5.0, 0, 0, 10, 20).item() == 1.0  # a == b: starts at 1
    assert length_envelope(10.0, 0, 5, 10, 10).item() == 1.0  # c == d: plateau to the end
    assert length_envelope(10.5, 0, 5, 10, 10).item() == 0.0
    with pytest.raises(ValueError, match="a <= b <= c <= d"):
        length_envelope(1.0, 3, 2, 4, 5)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0, 100), min_size=4, max_size=4), st.floats(-10, 200))
def test_envelope_in_unit_interval(points, length):
    a, b, c, d = sorted(points)
    v = length_envelope(length, a, b, c, d).item()
    assert 0.0 <= v <= 1.0
    if b <= length <= c:
        assert v == 1.0


def test_targets_need_data_then_follow_correct_lengths():
    t = LengthTargets(min_count=4, max_length=1000)
    assert t.envelope("math_reasoning") is None and t.score("math_reasoning", 10) is None
    for n in (100, 110, 120, 130):
        t.observe("math_reasoning", n, correct=True)
    t.observe("math_reasoning", 5000, correct=False)  # wrong answers never move the target
    assert t.target("math_reasoning") == 115
    a, b, c, d = t.envelope("math_reasoning")
    assert b == pytest.approx(138) and c == d == 1000  # reasoning: reward going longer
    assert t.score("math_reasoning", 100) < 1.0 < t.score("math_reasoning", 200) + 0.5


def test_targets_shrink_perception_tasks():
    t = LengthTargets(min_count=2)
    for n in (50, 50, 50):
        t.observe("ocr", n, correct=True)
    a, b, c, d = t.envelope("ocr")
    assert (a, b) == (0.0, 0.0) and c == pytest.approx(40) and d == pytest.approx(80)
    assert t.score("ocr", 30) == 1.0 and t.score("ocr", 50) < 1.0


def test_targets_state_round_trip_and_validation():
    t = LengthTargets(min_count=1, window=3)
    for n in (1, 2, 3, 4):
        t.observe("chart", n, correct=True)
    u = LengthTargets(min_count=1, window=3)
    u.load_state_dict(t.state_dict())
    assert u.target("chart") == t.target("chart") == 3
    with pytest.raises(ValueError):
        LengthTargets(step=1.5)


def test_token_entropy_exact():
    assert token_entropy(torch.zeros(4)).item() == pytest.approx(math.log(4))
    assert token_entropy(torch.tensor([1e4, 0.0, 0.0])).item() == pytest.approx(0.0, abs=1e-6)
    logits = torch.randn(3, 5, 11)
    p = torch.softmax(logits, -1)
    assert torch.allclose(token_entropy(logits), -(p * p.log()).sum(-1), atol=1e-5)


def test_band_penalty_per_task():
    ent = torch.tensor([[1.0, 1.0], [0.1, 0.1], [0.4, 9.9]])
    mask = torch.tensor([[1, 1], [1, 1], [1, 0]])
    keys, h, count = task_entropies(ent, mask, ["reason", "ground", "vqa"])
    assert keys == ["reason", "ground", "vqa"]
    assert h.tolist() == pytest.approx([1.0, 0.1, 0.4]) and count.tolist() == [2, 2, 1]
    # reason: 1.0 - 0.6 = 0.4; ground: 0.2 - 0.1 = 0.1; vqa inside the band: 0.
    assert entropy_band_penalty(ent, mask, ["reason", "ground", "vqa"]).item() == pytest.approx(0.5)


def test_band_penalty_pools_tokens_of_a_task_and_ignores_empty_tasks():
    ent = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 0, 0], [1, 1, 1]])
    # One task: mean over its 4 tokens = 0.25, inside the band.
    assert entropy_band_penalty(ent, mask, ["t", "t"]).item() == pytest.approx(0.0)
    assert entropy_band_penalty(ent, torch.tensor([[1, 0, 0], [0, 0, 0]]), ["a", "b"]).item() == pytest.approx(0.4)


def test_band_penalty_gradient_pushes_into_band():
    logits = torch.zeros(1, 3, 50, requires_grad=True)  # entropy log(50) ~ 3.9: too high
    pen = entropy_band_penalty(token_entropy(logits), torch.ones(1, 3), ["t"])
    pen.backward()
    step = logits - 1.0 * logits.grad
    assert logits.grad.abs().sum() == 0  # uniform logits sit at a stationary point of entropy
    peaked = torch.zeros(1, 3, 50)
    peaked[..., 0] = 3.0
    peaked.requires_grad_(True)
    entropy_band_penalty(token_entropy(peaked), torch.ones(1, 3), ["t"]).backward()
    lower = token_entropy(peaked.detach() - 0.5 * peaked.grad).mean()
    assert lower < token_entropy(peaked.detach()).mean()
    assert step.shape == logits.shape
