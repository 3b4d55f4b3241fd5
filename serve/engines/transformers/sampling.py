"""Per-row token choice for a decoding batch: each row's own temperature, top_k, top_p, min_p and generator.

HF `generate` samples a whole batch from one global RNG with one temperature. A server needs
every request to keep its own knobs and its own seeded generator, so that a seeded request
yields the same tokens alone or inside any batch. `choose_tokens` picks every row's next
token itself; the caller then masks the logits so HF's greedy step takes exactly that token.

Logprobs are always taken under the model's raw distribution (log_softmax of the logits,
before temperature and top_p): that is what the RL trainer recomputes for the same tokens.
"""

from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["GREEDY_EPS", "choose_tokens", "make_generator", "top_logprobs"]

# Temperatures below this decode greedily, as in vLLM (dividing by ~0 would overflow).
GREEDY_EPS = 1e-5


def make_generator(seed: int | None, device: torch.device | str) -> torch.Generator:
    """A generator for one row: seeded when the request has a seed, else from OS entropy."""
    gen = torch.Generator(device=device)
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(seed)
    return gen


def _sample(probs: torch.Tensor, top_p: float, gen: torch.Generator, top_k: int = 0, min_p: float = 0.0) -> int:
    """Draw one token id from one row's probabilities (V,), restricted to its top_k, top_p nucleus and min_p."""
    if top_p >= 1.0 and top_k <= 0 and min_p <= 0.0:
        return int(torch.multinomial(probs, 1, generator=gen))
    # Filters in vLLM's order: top_k, then the nucleus (the smallest prefix of the sorted distribution
    # whose mass reaches top_p), then min_p relative to the most likely token, which always stays.
    sorted_p, order = probs.sort(descending=True)
    keep = torch.ones_like(sorted_p, dtype=torch.bool)
    if 0 < top_k < len(sorted_p):
        keep[top_k:] = False
        if top_p < 1.0:  # the nucleus of what top_k left, renormalised
            kept = sorted_p[:top_k]
            keep[:top_k] = ((kept.cumsum(0) - kept) / kept.sum()) < top_p
    elif top_p < 1.0:
        keep = (sorted_p.cumsum(0) - sorted_p) < top_p
    if min_p > 0.0:
        keep &= sorted_p >= min_p * sorted_p[0]
    keep[0] = True
    return int(order[torch.multinomial(sorted_p * keep, 1, generator=gen)])


def choose_tokens(
    logits: torch.Tensor,
    temperatures: Sequence[float],
    top_ps: Sequence[float],
    generators: Sequence[torch.Generator | None],
    forced: Sequence[int | None],
    top_ks: Sequence[int] | None = None,
    min_ps: Sequence[float] | None = None,
) -> torch.Tensor:
    """Next token per row of `logits` (B, V): forced id, else greedy (temperature ~0), else sampled.

    Each sampled row draws from its own generator exactly once per sampled step, and its
    draw depends only on its own logits and knobs, never on the other rows of the batch
    (softmax is row-wise, so computing it for all sampled rows at once changes nothing).
    """
    chosen = logits.argmax(dim=-1)
    sampled = [i for i, (t, f) in enumerate(zip(temperatures, forced)) if f is None and t > GREEDY_EPS]
    if sampled:
        temps = torch.tensor([temperatures[i] for i in sampled], dtype=torch.float32, device=logits.device)
        probs = torch.softmax(logits[sampled].float() / temps[:, None], dim=-1)
        for row, i in zip(probs, sampled):
            if generators[i] is None:
                raise ValueError(f"row {i} samples (temperature {temperatures[i]}) but has no generator")
            chosen[i] = _sample(row, top_ps[i], generators[i], top_ks[i] if top_ks else 0,
                                min_ps[i] if min_ps else 0.0)
    for i, force in enumerate(forced):
        if force is not None:
            chosen[i] = force
    return chosen


def top_logprobs(logp: torch.Tensor, ks: Sequence[int]) -> list[tuple[list[int], list[float]]]:
    """For each row of `logp` (B, V), its `ks[i]` most likely ids and their logprobs, best first."""
    k_max = min(max(ks, default=0), logp.shape[-1])
    if k_max <= 0:
        return [([], []) for _ in ks]
    vals, ids = logp.topk(k_max, dim=-1)  # topk sorts descending
    vals, ids = vals.tolist(), ids.tolist()
    return [(ids[i][:k], vals[i][:k]) for i, k in enumerate(ks)]
