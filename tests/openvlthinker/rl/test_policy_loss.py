"""Policy loss: clip regions, dual-clip, gradient directions, token-mean weighting, masks."""

import math

import pytest
import torch

from openvlthinker.rl import masked_mean, policy_loss


def one_token(ratio: float, adv: float, **kw):
    """Loss and gradient w.r.t. the new logprob for a single token."""
    logp = torch.tensor([[math.log(ratio)]], requires_grad=True)
    old = torch.zeros(1, 1)
    loss, metrics = policy_loss(logp, old, torch.tensor([adv]), torch.ones(1, 1), **kw)
    loss.backward()
    return loss.item(), logp.grad.item(), metrics


def test_inside_trust_region_is_plain_surrogate():
    loss, grad, m = one_token(1.1, 2.0)
    assert loss == pytest.approx(-2.2)
    assert grad == pytest.approx(-2.2)  # d(-A r)/dlogp = -A r
    assert m["clip_frac"] == 0.0


def test_clip_higher_upper_bound_is_0_3():
    loss, grad, m = one_token(1.5, 1.0)  # positive A, ratio above 1 + 0.3: clipped, no gradient
    assert loss == pytest.approx(-1.3)
    assert grad == 0.0
    assert m["clip_frac"] == 1.0 and m["clip_frac_high"] == 1.0
    loss, grad, _ = one_token(1.25, 1.0)  # inside [0.8, 1.3]: not clipped although > 1.2
    assert loss == pytest.approx(-1.25) and grad != 0.0


def test_lower_clip_for_negative_advantage():
    loss, grad, m = one_token(0.5, -1.0)  # negative A, ratio below 0.8: clipped at 0.8
    assert loss == pytest.approx(0.8)
    assert grad == 0.0
    assert m["clip_frac_low"] == 1.0


def test_positive_advantage_low_ratio_keeps_gradient():
    # Pessimistic min: a positive advantage with a small ratio is not clipped.
    loss, grad, _ = one_token(0.5, 1.0)
    assert loss == pytest.approx(-0.5) and grad < 0


def test_dual_clip_caps_negative_advantage_loss():
    loss, grad, m = one_token(5.0, -1.0)
    assert loss == pytest.approx(3.0)  # capped at c * |A|
    assert grad == 0.0
    assert m["dual_clip_frac"] == 1.0
    loss, grad, m = one_token(5.0, -1.0, dual_clip=None)
    assert loss == pytest.approx(5.0) and grad > 0
    loss, _, m = one_token(2.5, -1.0)  # below the cap: ordinary PPO
    assert loss == pytest.approx(2.5) and m["dual_clip_frac"] == 0.0


def test_gradient_direction_follows_advantage_sign():
    for adv, sign in ((1.0, -1), (-1.0, 1)):
        _, grad, _ = one_token(1.0, adv)
        assert math.copysign(1, grad) == sign  # descent raises logp for A>0, lowers it for A<0


def test_token_mean_weights_long_responses_more():
    # Two responses, lengths 1 and 3, advantages +1 and -1 at ratio 1: token mean = (-1 + 3)/4.
    logp = torch.zeros(2, 3)
    mask = torch.tensor([[1, 0, 0], [1, 1, 1]])
    loss, _ = policy_loss(logp, logp, torch.tensor([1.0, -1.0]), mask)
    assert loss.item() == pytest.approx(0.5)


def test_masked_tokens_have_no_effect():
    logp = torch.randn(3, 5, requires_grad=True)
    old = logp.detach() + 0.1 * torch.randn(3, 5)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 0], [1, 0, 0, 0, 0]])
    adv = torch.tensor([1.0, -0.5, 2.0])
    loss, _ = policy_loss(logp, old, adv, mask)
    loss.backward()
    assert torch.all(logp.grad[mask == 0] == 0)
    garbage = logp.detach().clone()
    garbage[mask == 0] = 1e6
    loss2, _ = policy_loss(garbage, old, adv, mask)
    assert loss2.item() == pytest.approx(loss.item())


def test_empty_mask_gives_zero_not_nan():
    loss, m = policy_loss(torch.zeros(2, 2), torch.zeros(2, 2), torch.ones(2), torch.zeros(2, 2))
    assert loss.item() == 0.0 and not math.isnan(m["approx_kl"])


def test_per_token_advantages_and_metrics():
    logp = torch.zeros(1, 2)
    loss, m = policy_loss(logp, logp, torch.tensor([[1.0, -1.0]]), torch.ones(1, 2))
    assert loss.item() == pytest.approx(0.0)
    assert m["ratio_mean"] == pytest.approx(1.0) and m["approx_kl"] == pytest.approx(0.0)


def test_k3_kl_is_off_by_default_and_pulls_towards_reference():
    logp = torch.zeros(1, 1, requires_grad=True)
    ref = torch.full((1, 1), -1.0)
    base, _ = policy_loss(logp, logp.detach(), torch.zeros(1), torch.ones(1, 1), ref_logprobs=ref)
    assert base.item() == 0.0
    loss, m = policy_loss(logp, logp.detach(), torch.zeros(1), torch.ones(1, 1), ref_logprobs=ref, kl_coef=0.1)
    assert m["kl_ref"] == pytest.approx(math.exp(-1) + 1 - 1)
    loss.backward()
    assert logp.grad.item() > 0  # descent lowers logp towards the reference's -1


def test_truncated_importance_weights():
    logp = torch.zeros(1, 2, requires_grad=True)
    old = torch.zeros(1, 2)
    behaviour = torch.tensor([[math.log(0.25), math.log(2.0)]])  # weights 4 -> capped 2, and 0.5
    loss, m = policy_loss(logp, old, torch.tensor([1.0]), torch.ones(1, 2), behaviour_logprobs=behaviour)
    assert loss.item() == pytest.approx(-(2.0 + 0.5) / 2)
    assert m["is_weight_mean"] == pytest.approx(1.25)


def test_shape_and_knob_validation():
    with pytest.raises(ValueError, match="mask shape"):
        policy_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2), torch.ones(2, 2))
    with pytest.raises(ValueError, match="old_logprobs shape"):
        policy_loss(torch.zeros(2, 3), torch.zeros(2, 2), torch.zeros(2), torch.ones(2, 3))
    with pytest.raises(ValueError, match="dual_clip"):
        policy_loss(torch.zeros(1, 1), torch.zeros(1, 1), torch.zeros(1), torch.ones(1, 1), dual_clip=0.5)


def test_masked_mean():
    assert masked_mean(torch.tensor([1.0, 3.0, 100.0]), torch.tensor([1, 1, 0])).item() == 2.0
