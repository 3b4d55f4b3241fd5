"""gaussian_rank: the worked examples of docs/method.md §1 and its properties."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm

from openvlthinker.rl import gaussian_rank, grpo_advantages
from openvlthinker.rl.reference import reference_gaussian_rank as reference_rank

WORKED = [
    ([0, 0, 0, 0, 1], [-0.3204] * 4 + [1.2816]),
    ([0, 0, 1, 1, 1], [-0.9030] * 2 + [0.6020] * 3),
    ([0.1, 0.1, 0.1, 0.2, 1.0], [-0.6020] * 3 + [0.5244, 1.2816]),
    ([1, 0, 0, 0, 0, 0, 0, 0], [1.5341] + [-0.2192] * 7),
]


@pytest.mark.parametrize("rewards,expected", WORKED)
def test_worked_examples(rewards, expected):
    got = gaussian_rank(torch.tensor(rewards, dtype=torch.float64))
    assert torch.allclose(got, torch.tensor(expected, dtype=torch.float64), atol=1e-4)


def test_worked_grpo_column():
    got = grpo_advantages(torch.tensor([0.0, 0, 0, 0, 1]), [0] * 5)
    assert torch.allclose(got, torch.tensor([-0.5] * 4 + [2.0]), atol=1e-4)


def test_small_inputs():
    assert gaussian_rank(torch.tensor([])).numel() == 0
    assert gaussian_rank(torch.tensor([3.5])).tolist() == [0.0]
    assert gaussian_rank(torch.tensor([1.0, 1.0, 1.0])).tolist() == [0.0, 0.0, 0.0]


def test_keeps_float_dtype_and_accepts_ints():
    assert gaussian_rank(torch.tensor([1.0, 2.0], dtype=torch.float32)).dtype == torch.float32
    assert gaussian_rank(torch.tensor([1, 2, 3])).dtype == torch.float32


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="1-D"):
        gaussian_rank(torch.zeros(2, 2))
    with pytest.raises(ValueError, match="finite"):
        gaussian_rank(torch.tensor([0.0, float("nan")]))


scores = st.lists(st.integers(-50, 50), min_size=1, max_size=40)


@settings(max_examples=200, deadline=None)
@given(scores)
def test_matches_plain_reference(values):
    got = gaussian_rank(torch.tensor(values, dtype=torch.float64))
    assert torch.allclose(got, torch.tensor(reference_rank(values), dtype=torch.float64), atol=1e-9)


@settings(max_examples=200, deadline=None)
@given(scores)
def test_mean_zero(values):
    assert abs(gaussian_rank(torch.tensor(values, dtype=torch.float64)).sum().item()) < 1e-9


@settings(max_examples=200, deadline=None)
@given(scores)
def test_invariant_under_increasing_transforms(values):
    x = torch.tensor(values, dtype=torch.float64)
    base = gaussian_rank(x)
    for transformed in (3 * x + 1, x**3, torch.exp(x / 10), torch.atan(x / 7)):
        assert torch.allclose(gaussian_rank(transformed), base, atol=1e-12)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 30), st.floats(-1e6, 1e6, allow_nan=False))
def test_all_equal_gives_zero(n, value):
    assert gaussian_rank(torch.full((n,), value, dtype=torch.float64)).abs().max().item() == 0.0


@settings(max_examples=200, deadline=None)
@given(scores, st.randoms(use_true_random=False))
def test_permutation_equivariant(values, rnd):
    x = torch.tensor(values, dtype=torch.float64)
    perm = list(range(len(values)))
    rnd.shuffle(perm)
    perm = torch.tensor(perm)
    assert torch.allclose(gaussian_rank(x[perm]), gaussian_rank(x)[perm], atol=1e-12)


@settings(max_examples=200, deadline=None)
@given(scores)
def test_ties_share_one_value_and_order_is_kept(values):
    x = torch.tensor(values, dtype=torch.float64)
    out = gaussian_rank(x)
    for i in range(len(values)):
        for j in range(len(values)):
            if values[i] == values[j]:
                assert out[i] == out[j]
            elif values[i] < values[j]:
                assert out[i] < out[j]


def test_outlier_does_not_inflate():
    # One huge reward gets the same advantage as a merely better one: rank, not scale.
    a = gaussian_rank(torch.tensor([0.0, 0, 0, 1]))
    b = gaussian_rank(torch.tensor([0.0, 0, 0, 1e9]))
    assert torch.equal(a, b)
    assert math.isclose(a[-1].item(), norm.ppf(0.875), abs_tol=1e-6)
