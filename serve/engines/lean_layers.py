"""The pieces of a Qwen3 / Qwen3-VL decoder layer, run without the transformers call stack.

Through `model(...)` a token passes a dozen wrappers (output capture, kwarg deprecation, mask
construction, cache bookkeeping) and Python-level RMSNorms of seven tensor ops each; on a small
model on a CPU those, not the matrix products, are most of the time. These functions run the same
layers' weights directly: fused `rms_norm`, the model's own rotary embedding, attention of one
query per row over the running batch's cache as two batched matmuls, and the projection modules
themselves, so LoRA layers (PEFT, mixed adapters per row via `adapter_names`) apply exactly as in
the full forward. `lean_step.LeanStep` puts them together; `supported_text_model` says which
decoders they know (any other model keeps the model's forward).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["attend_cache", "attention_inputs", "linear", "linear_patch_embed", "mlp_residual", "rms_norm",
           "supported_text_model"]

_SUPPORTED = {"Qwen3VLTextModel", "Qwen3Model"}


def rms_norm(x: torch.Tensor, norm: torch.nn.Module) -> torch.Tensor:
    """The model's RMSNorm: one fused op in float32; other dtypes follow HF's upcast-then-cast order."""
    eps = getattr(norm, "variance_epsilon", None) or getattr(norm, "eps", 1e-6)
    if x.dtype == torch.float32:
        return F.rms_norm(x, (x.shape[-1],), norm.weight, eps)
    return norm.weight * F.rms_norm(x.float(), (x.shape[-1],), None, eps).to(x.dtype)


def linear(module: torch.nn.Module, x: torch.Tensor, names: list[str] | None) -> torch.Tensor:
    """Apply a projection; LoRA-wrapped ones get the per-row adapter names."""
    if names is not None and hasattr(module, "lora_A"):
        return module(x, adapter_names=names)
    return module(x)


def attention_inputs(layer: torch.nn.Module, h: torch.Tensor, names: list[str] | None, cos: torch.Tensor,
                     sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A decoder layer's queries, keys and values (B, heads, L, head_dim) for h (B, L, D): normed and rotated."""
    attn = layer.self_attn
    x = rms_norm(h, layer.input_layernorm)
    heads = (*h.shape[:2], -1, attn.head_dim)
    q = rms_norm(linear(attn.q_proj, x, names).view(heads), attn.q_norm).transpose(1, 2)
    k = rms_norm(linear(attn.k_proj, x, names).view(heads), attn.k_norm).transpose(1, 2)
    v = linear(attn.v_proj, x, names).view(heads).transpose(1, 2)
    return q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin, v


def mlp_residual(layer: torch.nn.Module, h: torch.Tensor, names: list[str] | None) -> torch.Tensor:
    """h plus the layer's gated MLP of its post-attention norm."""
    x = rms_norm(h, layer.post_attention_layernorm)
    mlp = layer.mlp
    gated = mlp.act_fn(linear(mlp.gate_proj, x, names)) * linear(mlp.up_proj, x, names)
    return h + linear(mlp.down_proj, gated, names)


def supported_text_model(base: torch.nn.Module) -> torch.nn.Module | None:
    """The Qwen3 / Qwen3-VL text decoder of `base` if the lean paths know its shape, else None."""
    inner = getattr(base, "model", None)
    text = getattr(inner, "language_model", inner)
    if type(text).__name__ not in _SUPPORTED or not hasattr(base, "lm_head"):
        return None
    attn = getattr(text.layers[0], "self_attn", None) if len(text.layers) else None
    if attn is None or not all(hasattr(attn, n) for n in ("q_norm", "k_norm", "scaling", "head_dim")):
        return None
    if any(getattr(layer, "attention_type", "full_attention") != "full_attention" for layer in text.layers):
        return None  # sliding-window layers would need their own mask
    return text


def linear_patch_embed(model: torch.nn.Module) -> bool:
    """Run a Qwen-VL patch embedding (a Conv3d whose kernel equals its stride) as one matrix product.

    Each patch meets the kernel exactly once, so the convolution is a linear map of the
    flattened patch; oneDNN's 3-D convolution took 1.5 ms for one image's 64 patches, the
    product well under 0.1 ms. Patches this model instance only; False if it has no such layer.
    """
    embed = getattr(getattr(getattr(model, "model", None), "visual", None), "patch_embed", None)
    conv = getattr(embed, "proj", None)
    if not isinstance(conv, torch.nn.Conv3d) or tuple(conv.kernel_size) != tuple(conv.stride) or any(conv.padding):
        return False
    weight = conv.weight.detach().reshape(conv.out_channels, -1)  # a view: adapters or reloads see the same data
    bias = conv.bias.detach() if conv.bias is not None else None

    original = embed.forward

    def forward(hidden_states: torch.Tensor) -> torch.Tensor:
        if embed.proj is not conv:  # replaced since (an adapter wrapping it): its own forward applies that
            return original(hidden_states)
        return F.linear(hidden_states.reshape(-1, weight.shape[1]).to(weight.dtype), weight, bias)

    embed.forward = forward
    return True


def attend_cache(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, bias: torch.Tensor,
            scale: float) -> torch.Tensor:
    """Attention of one query per row (B, H, 1, d) over the cache (B, KVH, C, d), grouped-query aware.

    Two batched matmuls over (row, kv head) pairs, each kv head serving its group of query
    heads; for a single query per row this is about twice as fast on a CPU as SDPA's kernel.
    The cache views keep row and head strides mergeable, so no cache copy is made. Returns (B, H, d).
    """
    b, heads, _, dim = q.shape
    kv_heads, cols = keys.shape[1], keys.shape[2]
    group = heads // kv_heads
    scores = torch.baddbmm(bias[:, None, None, :].expand(b, kv_heads, group, cols).reshape(b * kv_heads, group, cols),
                           q.reshape(b * kv_heads, group, dim), keys.reshape(b * kv_heads, cols, dim).transpose(1, 2),
                           alpha=scale)
    return torch.bmm(torch.softmax(scores, dim=-1), values.reshape(b * kv_heads, cols, dim)).view(b, heads, dim)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)
