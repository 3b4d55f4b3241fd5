"""The prompt forward (prefill) of a Qwen3 / Qwen3-VL batch, without the transformers call stack.

Under load, requests join the running batch one or two at a time, so most prefills are small
and their cost through `model(...)` is mostly the wrappers (output capture, mask
construction, cache bookkeeping, Python RMSNorms), as it was for decoding steps
(`lean_decode.py`). This runs the same weights directly: token embeddings, the vision tower
(the model's own module, called once for all images of the batch), image features scattered
into their placeholder positions, then each decoder layer with fused RMSNorm, the model's
rotary embedding (M-RoPE positions from the caller), SDPA under a causal and left-padding
mask, and the DeepStack features added to the visual positions after the first layers, as
`Qwen3VLTextModel` does. Keys and values go into the transformers `DynamicCache` the running
batch keeps. What the vision tower derives from image sizes alone (position-embedding
interpolation, rotary positions, attention segment bounds; a third of its time for one
image) is computed once per combination of image grids and handed to it as the precomputed
inputs transformers accepts. LoRA projections get the per-row adapter names; an adapter with layers in the
vision tower (which PEFT cannot mix per row) sends the batch through the model instead.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from .base import EngineError
from .lean_decode import _linear, _rms_norm, attention_inputs, mlp_residual, supported_text_model

__all__ = ["LeanPrefill"]

GEOMETRY_CACHE = 256  # distinct image-grid combinations remembered


class LeanPrefill:
    """Runs a left-padded prompt batch through a Qwen3-family model, filling a DynamicCache."""

    def __init__(self, base: torch.nn.Module, text_model: torch.nn.Module):
        self.base, self.text = base, text_model
        self.mrope = type(text_model).__name__ == "Qwen3VLTextModel"
        self.visual = getattr(base.model, "visual", None)
        self.image_token_id = getattr(base.config, "image_token_id", None)
        self._geometry: dict[tuple, dict[str, Any]] = {}  # image grids -> precomputed vision-tower inputs

    @classmethod
    def build(cls, base: torch.nn.Module) -> "LeanPrefill | None":
        """A lean prefill for `base` (the model under any PEFT wrapper), or None if its shape is not known."""
        text = supported_text_model(base)
        return None if text is None else cls(base, text)

    def handles(self, enc: dict[str, Any]) -> bool:
        """False when the batch must go through the model (videos, or LoRA layers in the vision tower)."""
        if "pixel_values_videos" in enc:
            return False
        if "pixel_values" in enc:
            if self.visual is None or self.image_token_id is None:
                return False
            if any(hasattr(m, "lora_A") for m in self.visual.modules()):
                return False
        return True

    def __call__(self, enc: dict[str, Any], positions: torch.Tensor, cache, names: list[str] | None) -> torch.Tensor:
        """Logits (B, V) of each row's last prompt token; the empty DynamicCache `cache` gets all keys/values."""
        ids, mask = enc["input_ids"], enc["attention_mask"].bool()
        b, length = ids.shape
        h = self.text.embed_tokens(ids)
        visual_pos, deepstack = None, []
        if "pixel_values" in enc:
            grid = enc["image_grid_thw"]
            out = self.visual(enc["pixel_values"].type(self.visual.dtype), grid_thw=grid, return_dict=True,
                              **self._vision_geometry(grid))
            visual_pos = ids == self.image_token_id
            features = out.pooler_output
            if int(visual_pos.sum()) != features.shape[0]:
                raise EngineError(f"the prompts hold {int(visual_pos.sum())} image tokens but the images give "
                                  f"{features.shape[0]} features")
            h[visual_pos] = features.to(h.dtype)
            deepstack = [f.to(h.dtype) for f in out.deepstack_features]
        if self.mrope and positions.ndim == 2:  # text only: temporal, height and width positions agree
            positions = positions[None].expand(3, b, length)
        cos, sin = self.text.rotary_emb(h, positions)
        cos, sin = cos[:, None], sin[:, None]  # broadcast over heads
        # Causal and left padding; a padding query may see itself, so no softmax row is empty
        # (its output is never used: no real query attends to a padding key).
        allowed = torch.ones(length, length, dtype=torch.bool, device=h.device).tril()[None] & mask[:, None, :]
        allowed |= torch.eye(length, dtype=torch.bool, device=h.device)[None]
        allowed = allowed[:, None]
        for index, layer in enumerate(self.text.layers):
            q, k, v = attention_inputs(layer, h, names, cos, sin)
            cache.update(k, v, index)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=layer.self_attn.scaling,
                                                 enable_gqa=q.shape[1] != k.shape[1])
            attended = _linear(layer.self_attn.o_proj, out.transpose(1, 2).reshape(b, length, -1), names)
            h = mlp_residual(layer, h + attended, names)
            if index < len(deepstack):
                h[visual_pos] += deepstack[index]
        h = _rms_norm(h[:, -1:], self.text.norm)  # left padding: the last column is real for every row
        return _linear(self.base.lm_head, h, names)[:, -1]

    def _vision_geometry(self, grid: torch.Tensor) -> dict[str, Any]:
        """The vision tower's size-only inputs for these image grids (cached); {} where transformers lacks them."""
        key = tuple(map(tuple, grid.tolist()))
        cached = self._geometry.get(key)
        if cached is None:
            try:
                from transformers.vision_utils import (get_vision_attention_seqlens,
                                                       get_vision_interpolation_indices_and_weights,
                                                       get_vision_position_ids)

                v = self.visual
                indices, weights = get_vision_interpolation_indices_and_weights(
                    grid, num_grid_per_side=v.num_grid_per_side, mode=v.interpolation_mode,
                    align_corners=v.interpolation_align_corners, spatial_merge_size=v.config.spatial_merge_size)
                cu_seqlens, max_seqlen = get_vision_attention_seqlens(grid, v.config)
                cached = {"interp_indices": indices, "interp_weights": weights, "cu_seqlens": cu_seqlens,
                          "max_seqlen": max_seqlen, "position_ids": get_vision_position_ids(grid, v.spatial_merge_size)}
            except (ImportError, AttributeError, TypeError):  # another transformers: let the tower compute them
                cached = {}
            if len(self._geometry) >= GEOMETRY_CACHE:
                self._geometry.clear()
            self._geometry[key] = cached
        return dict(cached)  # the tower pops what it uses
