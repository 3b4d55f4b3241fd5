"""Tensor helpers shared by the lean forwards of the vision tower (here) and the decoder (serve.engines).

Plain functions on tensors: no modules, no state. They compute exactly what the transformers
modules they stand in for compute (tested against them where they are used).
"""

from __future__ import annotations

import torch

__all__ = ["conv_as_linear", "rotate", "signed_sin"]


def conv_as_linear(conv: torch.nn.Module | None) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """A patch embedding's Conv3d whose kernel equals its stride, as (weight, bias) of a linear map of the
    flattened patch (each patch meets the kernel exactly once); None for any other layer. The weight is a
    view: adapters or reloads see the same data."""
    if not isinstance(conv, torch.nn.Conv3d) or tuple(conv.kernel_size) != tuple(conv.stride) or any(conv.padding):
        return None
    return conv.weight.detach().reshape(conv.out_channels, -1), conv.bias.detach() if conv.bias is not None else None


def signed_sin(sin: torch.Tensor) -> torch.Tensor:
    """sin with its first half negated: rotate_half(x) * sin == swap_halves(x) * signed_sin(sin), exactly."""
    half = sin.shape[-1] // 2
    return torch.cat([-sin[..., :half], sin[..., half:]], dim=-1)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin_signed: torch.Tensor) -> torch.Tensor:
    """The rotary embedding x * cos + rotate_half(x) * sin, with the halves swapped by one flip."""
    d = x.shape[-1]
    return x * cos + x.unflatten(-1, (2, d // 2)).flip(-2).flatten(-2) * sin_signed
