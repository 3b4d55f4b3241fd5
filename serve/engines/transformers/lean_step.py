"""One forward for the running batch's next tokens and the prompts that join it (Qwen3 / Qwen3-VL).

Under load requests join the running batch one or two at a time. Prefilling them in a forward of
their own cost as much engine time as decoding: a prompt of forty tokens is a few matrix rows, but
a separate forward pays every layer's fixed per-operation cost again. Here the decoding rows (one
token each) and the joining prompts (all their tokens) go through the decoder layers together, as
one list of tokens: norms, projections (LoRA adapters per token, via PEFT's `adapter_names`), the
rotary embedding and the MLP run once over all of them, and only attention splits, the decoding
rows attending over the running batch's cache (`KVBatch`) and the prompts causally over themselves.
The prompts' images go through the vision tower first (`lean_vision.LeanVision`), their features
into the placeholder positions and the DeepStack features onto them after the first layers, as
`Qwen3VLTextModel` does.

The result: each decoding row's next-token logits, each prompt's first-token logits, and the
prompts' keys and values as a `DynamicCache` for the batch to merge. With no prompts this is a
decoding step, with no decoding rows a prefill; both equal the model's own forward (tested, with
mixed adapters).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from openvlthinker.models.lean_vision import LeanVision

from ..base import EngineError
from .kv_cache import KVBatch
from .lean_layers import (attend_cache, attention_inputs, fuse_layer, linear, mlp_residual, rms_norm, signed_sin,
                          supported_text_model)

__all__ = ["Decoding", "LeanStep", "Prompts"]


@dataclass
class Decoding:
    """The running rows: last token (B,), its position (B,), and the cache (grown by one column)."""

    tokens: torch.Tensor
    positions: torch.Tensor
    kv: KVBatch


@dataclass
class Prompts:
    """Joining prompts, left-padded (Bp, L), with their positions ((3,) Bp, L) and image features if any."""

    enc: dict[str, Any]
    positions: torch.Tensor
    vision: tuple[torch.Tensor, list[torch.Tensor]] | None = None


class LeanStep:
    """Runs decoding rows and joining prompts through a Qwen3-family decoder in one pass."""

    def __init__(self, base: torch.nn.Module, text_model: torch.nn.Module, fuse: bool = True):
        self.base, self.text = base, text_model
        self.mrope = type(text_model).__name__ == "Qwen3VLTextModel"
        visual = getattr(getattr(base, "model", None), "visual", None)
        self.vision = LeanVision.build(visual) if visual is not None else None
        self.image_token_id = getattr(base.config, "image_token_id", None)
        # q/k/v and gate/up as one product each; their modules' weights become views of the fused matrices.
        self.fused = [fuse_layer(layer) if fuse else None for layer in text_model.layers]

    @classmethod
    def build(cls, base: torch.nn.Module, fuse: bool = True) -> "LeanStep | None":
        """A lean step for `base` (the model under any PEFT wrapper), or None if its shape is not known.

        fuse=False keeps every projection a product of its own (bench/lean_step.py compares the two)."""
        text = supported_text_model(base)
        return None if text is None else cls(base, text, fuse)

    def handles(self, enc: dict[str, Any]) -> bool:
        """False when prompts must go through the model (videos, or LoRA layers in the vision tower)."""
        if "pixel_values_videos" in enc:
            return False
        if "image_features" in enc:  # the gateway ran the tower
            return self.image_token_id is not None
        if "pixel_values" in enc:
            return self.vision is not None and self.image_token_id is not None and not self.vision.has_adapters()
        return True

    def encode_images(self, enc: dict[str, Any]) -> tuple[torch.Tensor, list[torch.Tensor]] | None:
        """The prompts' image features and DeepStack features (None without images), from the vision tower
        or as the gateway sent them; EngineError if the prompts' placeholders and the images disagree."""
        if "image_features" in enc:  # computed on the gateway's side (gateway_vision.py)
            features, deepstack = enc["image_features"], list(enc["deepstack_features"])
        elif "pixel_values" in enc:
            features, deepstack = self.vision(enc["pixel_values"], enc["image_grid_thw"])
        else:
            return None
        placeholders = int((enc["input_ids"] == self.image_token_id).sum())
        if placeholders != features.shape[0]:
            raise EngineError(f"the prompts hold {placeholders} image tokens but the images give {features.shape[0]} features")
        return features, deepstack

    def __call__(self, decoding: Decoding | None, prompts: Prompts | None,
                 names: list[str] | None) -> tuple[torch.Tensor, Any]:
        """Logits (B + Bp, V): the decoding rows', then each prompt's last token's; and the prompts'
        DynamicCache (None without prompts). `names`: adapter names per row, decoding rows first."""
        from transformers import DynamicCache

        b = decoding.tokens.shape[0] if decoding is not None else 0
        bp, length = prompts.enc["input_ids"].shape if prompts is not None else (0, 0)
        ids, positions, token_names = self._tokens(decoding, prompts, names, b, length)
        h = self.text.embed_tokens(ids)[:, None]  # (N, 1, D): each token is a row, as PEFT's mixed batches index them
        visual, deepstack = None, []
        if prompts is not None and prompts.vision is not None:
            features, deepstack = prompts.vision
            visual = torch.cat([ids.new_zeros(b, dtype=torch.bool), (ids[b:] == self.image_token_id)])
            h[visual] = features.to(h.dtype)[:, None]
            deepstack = [f.to(h.dtype)[:, None] for f in deepstack]
        cos, sin = self.text.rotary_emb(h, positions)
        cos, sin = cos[:, None], signed_sin(sin[:, None])  # (N, 1, 1, d): broadcast over heads
        bias = _cache_bias(decoding.kv.mask, h.dtype) if decoding is not None else None
        allowed = _prompt_mask(prompts.enc["attention_mask"]) if prompts is not None else None
        cache = DynamicCache() if prompts is not None else None
        final = len(self.text.layers) - 1
        for index, layer in enumerate(self.text.layers):
            qkv, gate_up = self._fused(index)
            q, k, v = attention_inputs(layer, h, token_names, cos, sin, qkv)  # (N, heads, 1, d)
            # Past the last layer's keys and values only the tokens whose logits are wanted matter: each
            # decoding row and each prompt's last token. The rest of a prompt skips that layer's attention
            # output, projection and MLP (a quarter of a four-layer prefill's products).
            trim = index == final and prompts is not None
            parts = []
            if decoding is not None:
                keys, values = decoding.kv.append(index, k[:b], v[:b])
                parts.append(attend_cache(q[:b], keys, values, bias, layer.self_attn.scaling).reshape(b, -1))
            if prompts is not None:
                qp, kp, vp = (_by_prompt(t[b:], bp, length) for t in (q, k, v))  # (Bp, heads, L, d)
                cache.update(kp, vp, index)
                mask = allowed
                if trim:  # left padding: a prompt's last column is real, and its query sees every real key
                    qp, mask = qp[:, :, -1:], allowed[:, :, -1:]
                out = F.scaled_dot_product_attention(qp, kp, vp, attn_mask=mask, scale=layer.self_attn.scaling,
                                                     enable_gqa=qp.shape[1] != kp.shape[1])
                parts.append(out.transpose(1, 2).reshape(-1, out.shape[1] * out.shape[3]))
            attended = parts[0] if len(parts) == 1 else torch.cat(parts)
            if trim:
                kept = _kept_tokens(b, bp, length)
                h, token_names = h[kept], names
                if visual is not None and index < len(deepstack):  # a DeepStack layer last: its kept image tokens
                    feature_row = visual.cumsum(0) - 1
                    visual, deepstack = visual[kept], [f[feature_row[kept][visual[kept]]] for f in deepstack]
            attended = linear(layer.self_attn.o_proj, attended[:, None], token_names)
            h = mlp_residual(layer, h + attended, token_names, gate_up)
            if index < len(deepstack):
                h[visual] += deepstack[index]
        return linear(self.base.lm_head, rms_norm(h, self.text.norm), names)[:, -1], cache

    def _fused(self, index: int) -> tuple[Any, Any]:
        """Layer `index`'s fused q/k/v and gate/up, each None where it cannot be used (then the modules run)."""
        fused = self.fused[index] or (None, None)
        return tuple(f if f is not None and f.valid() else None for f in fused)  # type: ignore[return-value]

    def _tokens(self, decoding: Decoding | None, prompts: Prompts | None, names: list[str] | None, b: int,
                length: int) -> tuple[torch.Tensor, torch.Tensor, list[str] | None]:
        """Token ids (N,), rotary position ids ((3,) N, 1) and adapter names (N) of every token, decoding rows first."""
        ids, positions = [], []
        if decoding is not None:
            ids.append(decoding.tokens)
            pos = decoding.positions
            positions.append(pos[None].expand(3, -1) if self.mrope else pos)  # a generated token's axes agree
        if prompts is not None:
            ids.append(prompts.enc["input_ids"].reshape(-1))
            pos = prompts.positions
            if self.mrope and pos.ndim == 2:  # text only: temporal, height and width positions agree
                pos = pos[None].expand(3, *pos.shape)
            positions.append(pos.reshape(*pos.shape[:-2], -1))
        token_names = None
        if names is not None:
            token_names = names[:b] + [name for name in names[b:] for _ in range(length)]
        ids_all = ids[0] if len(ids) == 1 else torch.cat(ids)
        pos_all = positions[0] if len(positions) == 1 else torch.cat(positions, dim=-1)
        return ids_all, pos_all[..., None], token_names


def _kept_tokens(decoding: int, prompts: int, length: int) -> torch.Tensor:
    """Indices of the decoding rows' tokens and of each left-padded prompt's last token in the token list."""
    return torch.cat([torch.arange(decoding), decoding + torch.arange(1, prompts + 1) * length - 1])


def _by_prompt(t: torch.Tensor, prompts: int, length: int) -> torch.Tensor:
    """(Bp * L, heads, 1, d) token rows -> (Bp, heads, L, d)."""
    return t.view(prompts, length, t.shape[1], t.shape[3]).transpose(1, 2)


def _cache_bias(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive attention bias over the cache's columns: 0 for real tokens, -inf for padding."""
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(mask == 0, float("-inf"))


def _prompt_mask(mask: torch.Tensor) -> torch.Tensor:
    """(Bp, 1, L, L) causal and left-padding mask; a padding query may see itself, so no softmax row is
    empty (its output is never used: no real query attends to a padding key)."""
    length = mask.shape[1]
    allowed = torch.ones(length, length, dtype=torch.bool, device=mask.device).tril()[None] & mask.bool()[:, None, :]
    allowed |= torch.eye(length, dtype=torch.bool, device=mask.device)[None]
    return allowed[:, None]
