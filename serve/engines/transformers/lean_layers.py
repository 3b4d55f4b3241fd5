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

import weakref

import torch
import torch.nn.functional as F

from openvlthinker.models.functional import conv_as_linear, rotate, signed_sin

from ..base import EngineError

__all__ = ["Fused", "attend_cache", "attention_inputs", "fuse_layer", "conv_as_linear", "linear", "linear_patch_embed", "mlp_residual",
           "rms_norm", "rotate", "signed_sin", "supported_text_model"]

_SUPPORTED = {"Qwen3VLTextModel", "Qwen3Model"}


def rms_norm(x: torch.Tensor, norm: torch.nn.Module) -> torch.Tensor:
    """The model's RMSNorm: one fused op in float32; other dtypes follow HF's upcast-then-cast order."""
    if x.dtype == torch.float32:
        return F.rms_norm(x, (x.shape[-1],), norm.weight, _eps(norm))
    return norm.weight * F.rms_norm(x.float(), (x.shape[-1],), None, _eps(norm)).to(x.dtype)


def _eps(norm: torch.nn.Module) -> float:
    """An RMSNorm module's epsilon (HF names it `variance_epsilon`, torch `eps`)."""
    return getattr(norm, "variance_epsilon", None) or getattr(norm, "eps", 1e-6)


def linear(module: torch.nn.Module, x: torch.Tensor, names: list[str] | None) -> torch.Tensor:
    """Apply a projection; LoRA-wrapped ones get the per-row adapter names."""
    if names is not None and hasattr(module, "lora_A"):
        return module(x, adapter_names=names)
    return module(x)


def attention_inputs(layer: torch.nn.Module, h: torch.Tensor, names: list[str] | None, cos: torch.Tensor,
                     sin_signed: torch.Tensor, fused: "Fused | None" = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A decoder layer's queries, keys and values (B, heads, L, head_dim) for h (B, L, D): normed and rotated.

    `sin_signed` is `signed_sin(sin)`; `fused` the layer's q/k/v as one product (`fuse_layer`): then
    queries and keys, adjacent in that product, are normed and rotated together, as one tensor."""
    attn = layer.self_attn
    x = rms_norm(h, layer.input_layernorm)
    heads = (*h.shape[:2], -1, attn.head_dim)
    if fused is not None:
        return _fused_attention_inputs(attn, fused.product(x, names), fused.sizes, heads, cos, sin_signed)
    q, k, v = (linear(proj, x, names) for proj in (attn.q_proj, attn.k_proj, attn.v_proj))
    q = rms_norm(q.view(heads), attn.q_norm).transpose(1, 2)
    k = rms_norm(k.view(heads), attn.k_norm).transpose(1, 2)
    return rotate(q, cos, sin_signed), rotate(k, cos, sin_signed), v.view(heads).transpose(1, 2)


def _fused_attention_inputs(attn: torch.nn.Module, qkv: torch.Tensor, sizes: list[int], heads: tuple[int, ...],
                            cos: torch.Tensor, sin_signed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v from the fused product (B, L, q | k | v): one norm (then each head's own weight) and one rotation
    for the query and key heads together, in the order `rms_norm` follows (normalise in float32, cast to the
    input's dtype, scale by the weight)."""
    dim, n_q = attn.head_dim, sizes[0]
    n_qk = n_q + sizes[1]
    qk = qkv[..., :n_qk].view(heads)
    normed = F.rms_norm(qk.float(), (dim,), None, _eps(attn.q_norm)).to(qk.dtype)
    qk = rotate((normed * _head_weights(attn, n_q // dim, (n_qk - n_q) // dim)).transpose(1, 2), cos, sin_signed)
    v = qkv[..., n_qk:].view(heads).transpose(1, 2)
    return qk[:, :n_q // dim], qk[:, n_q // dim:], v


_HEAD_WEIGHTS: "weakref.WeakKeyDictionary[torch.nn.Module, tuple[tuple[int, int], torch.Tensor]]" = weakref.WeakKeyDictionary()


def _head_weights(attn: torch.nn.Module, q_heads: int, k_heads: int) -> torch.Tensor:
    """(q_heads + k_heads, head_dim): the q_norm weight for each query head, then the k_norm weight for each
    key head, in the weights' dtype; rebuilt when either norm's weights change."""
    key = (attn.q_norm.weight.data_ptr(), attn.k_norm.weight.data_ptr())
    cached = _HEAD_WEIGHTS.get(attn)
    if cached is None or cached[0] != key or cached[1].shape[0] != q_heads + k_heads:
        weights = torch.cat([attn.q_norm.weight.detach().expand(q_heads, -1),
                             attn.k_norm.weight.detach().expand(k_heads, -1)])
        cached = _HEAD_WEIGHTS[attn] = (key, weights)
    return cached[1]


def mlp_residual(layer: torch.nn.Module, h: torch.Tensor, names: list[str] | None,
                 fused: "Fused | None" = None) -> torch.Tensor:
    """h plus the layer's gated MLP of its post-attention norm (`fused`: gate and up as one product)."""
    x = rms_norm(h, layer.post_attention_layernorm)
    mlp = layer.mlp
    gate, up = fused(x, names) if fused is not None else (linear(mlp.gate_proj, x, names), linear(mlp.up_proj, x, names))
    return h + linear(mlp.down_proj, mlp.act_fn(gate) * up, names)


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
    linear_map = conv_as_linear(conv)
    if linear_map is None:
        return False
    weight, bias = linear_map
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


class Fused:
    """Projections of one decoder layer that read the same input, as one matrix: q/k/v, or gate/up.

    One product instead of three (or two) per layer and step; the modules' own weights become views
    of the fused matrix, so nothing is stored twice and the modules (and PEFT's wrappers around them)
    keep working. LoRA adapters add their own low-rank terms per row on top (`_add_lora`). The
    modules are looked up by name at every call: loading an adapter wraps them in place.
    """

    def __init__(self, owner: torch.nn.Module, names: list[str], weight: torch.Tensor):
        self.owner, self.names, self.weight = owner, names, weight
        self.sizes = [_base(getattr(owner, n)).out_features for n in names]

    @classmethod
    def build(cls, owner: torch.nn.Module, names: list[str]) -> "Fused | None":
        """Fuse `owner`'s Linears `names` (plain or LoRA-wrapped, no bias, one device and dtype), or None."""
        bases = [_base(getattr(owner, n)) for n in names]
        if not all(isinstance(b, torch.nn.Linear) and b.bias is None for b in bases):
            return None
        if len({(b.weight.dtype, b.weight.device, b.in_features) for b in bases}) != 1:
            return None
        with torch.no_grad():
            weight = torch.cat([b.weight.detach() for b in bases])
            for b, view in zip(bases, weight.split([b.out_features for b in bases])):
                b.weight.data = view
        return cls(owner, names, weight)

    def valid(self) -> bool:
        """The modules still read their weights from the fused matrix (nothing replaced them since)."""
        return _base(getattr(self.owner, self.names[0])).weight.data_ptr() == self.weight.data_ptr()

    def __call__(self, x: torch.Tensor, names: list[str] | None) -> list[torch.Tensor]:
        """Every module's output for x, as views of one product (with each row's LoRA terms added)."""
        return list(self.product(x, names).split(self.sizes, dim=-1))

    def product(self, x: torch.Tensor, names: list[str] | None) -> torch.Tensor:
        """The modules' outputs side by side along the last axis (each row's LoRA terms added)."""
        y = F.linear(x, self.weight)
        if names is not None:
            for attr, out in zip(self.names, y.split(self.sizes, dim=-1)):
                module = getattr(self.owner, attr)
                if hasattr(module, "lora_A"):
                    _add_lora(out, module, x, names)
        return y


def fuse_layer(layer: torch.nn.Module) -> tuple[Fused, Fused] | None:
    """The fused q/k/v and gate/up projections of a Qwen3 decoder layer (None if they cannot be fused)."""
    qkv = Fused.build(layer.self_attn, ["q_proj", "k_proj", "v_proj"])
    gate_up = Fused.build(layer.mlp, ["gate_proj", "up_proj"])
    return None if qkv is None or gate_up is None else (qkv, gate_up)


def _base(module: torch.nn.Module) -> torch.nn.Module:
    """The Linear under a PEFT LoRA wrapper (or the module itself)."""
    return getattr(module, "base_layer", module)


def _add_lora(out: torch.Tensor, module: torch.nn.Module, x: torch.Tensor, names: list[str]) -> None:
    """out[rows] += the LoRA term of each row's adapter, as PEFT's mixed-batch forward computes it."""
    for name in set(names):
        if name not in module.lora_A:  # the base model ("__base__"), or an adapter without this module
            continue
        if name in getattr(module, "lora_variant", {}):
            raise EngineError(f"adapter {name!r} uses a LoRA variant the lean step does not apply")
        rows = [i for i, n in enumerate(names) if n == name]
        lora_a = module.lora_A[name]
        sub = x[rows].to(lora_a.weight.dtype)
        out[rows] += (module.lora_B[name](lora_a(module.lora_dropout[name](sub))) * module.scaling[name]).to(out.dtype)
