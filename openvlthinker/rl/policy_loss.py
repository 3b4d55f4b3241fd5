"""Token-mean PPO policy loss with clip-higher and dual-clip (docs/method.md §2).

Signature shared by every loss: fn(logp, old_logp, adv, mask, **knobs) -> (loss, metrics).
Options beyond the paper's defaults:
- k3 KL to a reference policy (off by default, as in the release);
- truncated importance weights for logged off-policy samples: when `behaviour_logprobs`
  (the logprobs of the policy that actually produced the tokens, e.g. an older served
  adapter) are given, each token's loss is weighted by min(pi_old / pi_behaviour, cap),
  detached, as in decoupled PPO; `old_logprobs` stays the proximal policy for clipping.
"""

from __future__ import annotations

import torch


def _check_shapes(logprobs: torch.Tensor, mask: torch.Tensor, **others: torch.Tensor | None) -> None:
    if logprobs.shape != mask.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} != logprobs shape {tuple(logprobs.shape)}")
    for name, t in others.items():
        if t is not None and t.shape != logprobs.shape:
            raise ValueError(f"{name} shape {tuple(t.shape)} != logprobs shape {tuple(logprobs.shape)}")


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of x over the positions where mask is set (0 when the mask is empty)."""
    m = mask.to(x.dtype)
    return (x * m).sum() / m.sum().clamp(min=1.0)


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.3,
    dual_clip: float | None = 3.0,
    ref_logprobs: torch.Tensor | None = None,
    kl_coef: float = 0.0,
    behaviour_logprobs: torch.Tensor | None = None,
    is_cap: float = 2.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO-clip loss averaged over all response tokens; shapes (B, T), advantages (B,) or (B, T)."""
    if advantages.ndim == 1:
        advantages = advantages[:, None].expand_as(logprobs)
    _check_shapes(
        logprobs, mask, old_logprobs=old_logprobs, advantages=advantages,
        ref_logprobs=ref_logprobs, behaviour_logprobs=behaviour_logprobs,
    )
    if not (clip_low >= 0 and clip_high >= 0):
        raise ValueError("clip_low and clip_high must be >= 0")
    if dual_clip is not None and dual_clip <= 1.0:
        raise ValueError(f"dual_clip must be > 1 (or None), got {dual_clip}")
    mask = mask.to(torch.bool)
    adv = advantages.to(logprobs.dtype).detach()
    log_ratio = logprobs - old_logprobs.detach()
    ratio = torch.exp(log_ratio.clamp(max=20.0))  # clamp keeps exp finite on wild tokens

    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    per_token = torch.maximum(unclipped, clipped)
    dual_hit = torch.zeros_like(mask)
    if dual_clip is not None:
        # For negative advantages the loss -A*ratio grows without bound in the ratio; cap it.
        cap = -adv * dual_clip
        dual_hit = (adv < 0) & (per_token > cap)
        per_token = torch.where(adv < 0, torch.minimum(per_token, cap), per_token)

    if behaviour_logprobs is not None:
        weight = torch.exp((old_logprobs - behaviour_logprobs).detach().clamp(max=20.0)).clamp(max=is_cap)
        per_token = per_token * weight

    kl_ref = None
    if ref_logprobs is not None and kl_coef > 0:
        delta = ref_logprobs.detach() - logprobs
        kl_ref = torch.exp(delta) - delta - 1.0  # k3 estimator, always >= 0
        per_token = per_token + kl_coef * kl_ref

    loss = masked_mean(per_token, mask)
    with torch.no_grad():
        clipped_wins = clipped > unclipped
        metrics = {
            "clip_frac": masked_mean(clipped_wins.float(), mask).item(),
            "clip_frac_low": masked_mean((clipped_wins & (ratio < 1.0 - clip_low)).float(), mask).item(),
            "clip_frac_high": masked_mean((clipped_wins & (ratio > 1.0 + clip_high)).float(), mask).item(),
            "dual_clip_frac": masked_mean(dual_hit.float(), mask).item(),
            "approx_kl": masked_mean(torch.exp(-log_ratio) + log_ratio - 1.0, mask).item(),
            "ratio_mean": masked_mean(ratio, mask).item(),
        }
        if kl_ref is not None:
            metrics["kl_ref"] = masked_mean(kl_ref, mask).item()
        if behaviour_logprobs is not None:
            metrics["is_weight_mean"] = masked_mean(weight, mask).item()
    return loss, metrics
