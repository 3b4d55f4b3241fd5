"""The Qwen3-VL vision tower's forward without the transformers call stack.

For one small image the tower is a few dozen tensor operations, and through the model's module
most of its time went to what does not depend on the pixels at all: resampling the learned
position grid, the rotary angles and the attention segments (recomputed for every image), output
capture and kwarg handling wrappers, and a Python loop over images for attention. Here what
depends only on the image grids is computed once per combination of grids and kept; the blocks
run the model's own weights as functional calls (fused layer norms, both rotations of a block in
one pass, one attention call for all images of equal size). The output equals the module's
(tested on batches of equal and of different image sizes).

`LeanVision.build` returns None for a tower of another shape, and `has_adapters` tells the caller
when a loaded adapter reaches into the tower (PEFT cannot mix those per row): then the model's
forward runs instead.

Serving calls it (`__call__`, in inference mode); the tiny model's vision stage trains through it
(`forward`, with autograd): the same weights, and less than half the module's time for a vision-stage
step's forward and backward on 32 small images (`bench/see_step.py`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from .functional import conv_as_linear, rotate, signed_sin

__all__ = ["LeanVision"]

GEOMETRY_CACHE = 256  # distinct image-grid combinations remembered


class LeanVision:
    """Image features and DeepStack features of a Qwen3-VL vision tower, for patch rows and their grids."""

    def __init__(self, visual: torch.nn.Module):
        self.visual = visual
        cfg = visual.config
        self.merge = cfg.spatial_merge_size
        self.heads = cfg.num_heads
        self.head_dim = cfg.hidden_size // cfg.num_heads
        self.deepstack = {layer: visual.deepstack_merger_list[i] for i, layer in enumerate(cfg.deepstack_visual_indexes)}
        self._geometry: dict[tuple, tuple] = {}

    @classmethod
    def build(cls, visual: torch.nn.Module | None) -> "LeanVision | None":
        """A lean forward for a Qwen3-VL vision tower, or None if `visual` is something else."""
        if type(visual).__name__ != "Qwen3VLVisionModel":
            return None
        if conv_as_linear(getattr(getattr(visual, "patch_embed", None), "proj", None)) is None:
            return None
        return cls(visual)

    def has_adapters(self) -> bool:
        """True when LoRA layers sit in the tower (its weights are then not the ones this path uses)."""
        return any(hasattr(m, "lora_A") for m in self.visual.modules())

    @torch.inference_mode()
    def __call__(self, pixel_values: torch.Tensor, grid: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """`forward` in inference mode: what serving runs."""
        return self.forward(pixel_values, grid)

    def forward(self, pixel_values: torch.Tensor, grid: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(merged image features (tokens, D_text), DeepStack features per injected layer) for images in `grid`;
        differentiable in the tower's weights when autograd is on."""
        pos_embeds, cos, sin_signed, lengths = self._grid_inputs(grid)
        v = self.visual
        conv = v.patch_embed.proj  # read at every call: a view of the live weights, trained or reloaded
        weight = conv.weight.reshape(conv.out_channels, -1)
        h = F.linear(pixel_values.reshape(-1, weight.shape[1]).to(weight.dtype), weight, conv.bias) + pos_embeds
        deepstack = []
        for index, block in enumerate(v.blocks):
            h = h + self._attention(block, h, cos, sin_signed, lengths)
            h = h + _mlp(block.mlp, _layer_norm(h, block.norm2))
            if index in self.deepstack:
                deepstack.append(_merge(self.deepstack[index], h, post_shuffle=True))
        return _merge(v.merger, h, post_shuffle=False), deepstack

    def _attention(self, block: torch.nn.Module, h: torch.Tensor, cos: torch.Tensor, sin_signed: torch.Tensor,
                   lengths: list[int]) -> torch.Tensor:
        attn = block.attn
        n = h.shape[0]
        qkv = F.linear(_layer_norm(h, block.norm1), attn.qkv.weight, attn.qkv.bias).view(n, 3, self.heads, self.head_dim)
        qk = rotate(qkv[:, :2], cos, sin_signed)  # queries and keys rotated together: (N, 2, heads, d)
        q, k, v = qk[:, 0], qk[:, 1], qkv[:, 2]
        if len(set(lengths)) == 1:  # images of one size: one attention call over (images, heads, patches, d)
            shape = (len(lengths), lengths[0], self.heads, self.head_dim)
            out = F.scaled_dot_product_attention(*(t.reshape(shape).transpose(1, 2) for t in (q, k, v)),
                                                 scale=attn.scaling)
            out = out.transpose(1, 2).reshape(n, -1)
        else:
            parts = [F.scaled_dot_product_attention(*(t.transpose(0, 1)[None] for t in chunk), scale=attn.scaling)
                     for chunk in zip(*(t.split(lengths) for t in (q, k, v)))]
            out = torch.cat([p[0].transpose(0, 1) for p in parts]).reshape(n, -1)
        return F.linear(out, attn.proj.weight, attn.proj.bias)

    def _grid_inputs(self, grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[int]]:
        """Position embeddings (N, D), rotary cos and signed sin (N, 1, 1, d) and patches per image (cached per grids).

        The position embeddings are learned: while training they are resampled from the live table at every
        call (from cached indices), so that gradients reach it; in inference they are cached too."""
        key = tuple(map(tuple, grid.tolist()))
        cached = self._geometry.get(key)
        if cached is None:
            cached = self._compute_grid_inputs(grid)
            if len(self._geometry) >= GEOMETRY_CACHE:
                self._geometry.clear()
            self._geometry[key] = cached
        indices, weights, pos_embeds, cos, sin_signed, lengths = cached
        if torch.is_grad_enabled() and self.visual.pos_embed.weight.requires_grad:
            pos_embeds = self._resample(indices, weights)
        return pos_embeds, cos, sin_signed, lengths

    def _resample(self, indices: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return (self.visual.pos_embed(indices) * weights[:, :, None]).sum(1)

    def _compute_grid_inputs(self, grid: torch.Tensor) -> tuple:
        from transformers.vision_utils import get_vision_interpolation_indices_and_weights, get_vision_position_ids

        v = self.visual
        indices, weights = get_vision_interpolation_indices_and_weights(
            grid, num_grid_per_side=v.num_grid_per_side, mode=v.interpolation_mode,
            align_corners=v.interpolation_align_corners, spatial_merge_size=self.merge)
        with torch.no_grad():  # what is cached must not hold a graph (a backward would free it)
            pos_embeds = self._resample(indices, weights)
            position_ids = get_vision_position_ids(grid, v.spatial_merge_size)
            cos, sin = v.rotary_pos_emb(pos_embeds, position_ids)
        lengths = [int(t * h * w) for t, h, w in grid.tolist()]
        return indices, weights, pos_embeds, cos[:, None, None], signed_sin(sin)[:, None, None], lengths


def _layer_norm(x: torch.Tensor, norm: torch.nn.LayerNorm) -> torch.Tensor:
    return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


def _mlp(mlp: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return F.linear(mlp.act_fn(F.linear(x, mlp.linear_fc1.weight, mlp.linear_fc1.bias)),
                    mlp.linear_fc2.weight, mlp.linear_fc2.bias)


def _merge(merger: torch.nn.Module, x: torch.Tensor, post_shuffle: bool) -> Any:
    """A patch merger: groups of merge² patches -> one token of the text model's width."""
    width = merger.hidden_size
    x = _layer_norm(x.view(-1, width), merger.norm) if post_shuffle else _layer_norm(x, merger.norm).view(-1, width)
    return F.linear(merger.act_fn(F.linear(x, merger.linear_fc1.weight, merger.linear_fc1.bias)),
                    merger.linear_fc2.weight, merger.linear_fc2.bias)
