"""Logprob and entropy of completion tokens without the B×T×V logits: the LM head runs on chunks of tokens.

A plain forward makes logits at every position (B×T×V in the model's dtype), and scoring then
gathers the completion positions into a float32 B×Tc×V tensor: with Qwen3's 151k vocabulary that
is gigabytes per micro-batch. Here the backbone gives the last hidden states, only the completion
positions are kept (N×H, padding dropped), and the LM head runs on chunks of those N tokens; a
chunk's logits exist in float32 only while its log-softmax and entropy are taken. Under gradients
each chunk is checkpointed, so the backward recomputes one chunk's logits at a time instead of
keeping every chunk's.

Chunks of tokens rather than of the vocabulary: the head is called as the module it is (a bias,
tied weights or a LoRA on the head all work) and each row's log-softmax is the full one, so the
numbers are the full computation's and autograd needs no hand-written backward.
"""

from __future__ import annotations

from functools import partial

import torch
from torch.utils.checkpoint import checkpoint

from openvlthinker.rl import token_entropy

__all__ = ["CHUNK_BYTES", "chunk_tokens_for", "completion_stats", "split_head"]

# The float32 logits of one chunk; its working set (logits, log-softmax, softmax) is a few times this.
CHUNK_BYTES = 256 * 2**20


def split_head(model) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The backbone (input ids -> last hidden states) and the LM head of a Hugging Face model, PEFT-wrapped or not."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    # PreTrainedModel.base_model is the module named by base_model_prefix: the decoder of a causal LM, the
    # vision-language backbone (vision tower + decoder) of Qwen3-VL; the LoRA layers live inside it.
    backbone, head = getattr(base, "base_model", base), base.get_output_embeddings()
    if backbone is base or head is None:
        raise ValueError(f"{type(base).__name__} has no separate backbone and LM head to score tokens with")
    return backbone, head


def chunk_tokens_for(vocab: int, budget_bytes: int = CHUNK_BYTES) -> int:
    """How many tokens' float32 logits fit in `budget_bytes`."""
    return max(1, budget_bytes // (4 * vocab))


def completion_stats(model, batch: dict[str, torch.Tensor], pos: torch.Tensor, tgt: torch.Tensor, mask: torch.Tensor,
                     chunk_tokens: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Logprob and entropy of each target token, float32 (B, Tc), 0 where `mask` is False.

    `pos[b, j]` is the position whose logits predict `tgt[b, j]`. Differentiable when grad is enabled.
    """
    backbone, head = split_head(model)
    hidden = backbone(**batch, use_cache=False)[0]
    rows = torch.arange(pos.shape[0], device=pos.device)[:, None].expand_as(pos)[mask]
    picked, targets = hidden[rows, pos[mask]], tgt[mask]
    n = chunk_tokens or chunk_tokens_for(head.weight.shape[0])
    run = partial(_chunk_stats, head)
    parts = [checkpoint(run, picked[s : s + n], targets[s : s + n], use_reentrant=False) if torch.is_grad_enabled()
             else run(picked[s : s + n], targets[s : s + n]) for s in range(0, targets.numel(), n)]
    logp = torch.zeros(pos.shape, dtype=torch.float32, device=hidden.device)
    ent = torch.zeros(pos.shape, dtype=torch.float32, device=hidden.device)
    if parts:
        logp[mask] = torch.cat([p[0] for p in parts])
        ent[mask] = torch.cat([p[1] for p in parts])
    return logp, ent


def _chunk_stats(head: torch.nn.Module, hidden: torch.Tensor,
                 targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logprob of each target and entropy for one chunk of hidden states: (n, H), (n,) -> (n,), (n,)."""
    logits = head(hidden).float()
    logp = torch.log_softmax(logits, dim=-1).gather(-1, targets[:, None]).squeeze(-1)
    return logp, token_entropy(logits)
