"""Where a trainer's model lives: device and dtype names from flags and config files, checked and resolved.

``auto`` means what a training run wants: the first CUDA device when torch sees one, else the
CPU; bfloat16 on CUDA, float32 on the CPU (bf16 matmuls on a CPU are slow and lose precision
for nothing). The names are checked without torch (:func:`check_placement`, for configs) and
resolved with it (:func:`resolve_device`, :func:`resolve_dtype`), where a CUDA device that is
not there is an error naming it.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["DEVICE_NAMES", "DTYPE_NAMES", "check_placement", "resolve_device", "resolve_dtype"]

DEVICE_NAMES = "auto, cpu, cuda or cuda:N"
DTYPE_NAMES = ("auto", "float32", "bfloat16")
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def check_placement(device: Any, dtype: Any, grad_checkpointing: Any = None) -> None:
    """Raise ValueError naming the bad value when a device, dtype or checkpointing setting is malformed."""
    if not isinstance(device, str) or not _DEVICE.match(device):
        raise ValueError(f"device must be {DEVICE_NAMES}, got {device!r}")
    if dtype not in DTYPE_NAMES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPE_NAMES)}, got {dtype!r}")
    if grad_checkpointing is not None and not isinstance(grad_checkpointing, bool):
        raise ValueError(f"grad_checkpointing must be true, false or unset (auto), got {grad_checkpointing!r}")


def resolve_device(name: str):
    """The torch.device for `name` (auto, cpu, cuda, cuda:N); a CUDA device torch cannot see is a ValueError."""
    import torch

    check_placement(name, "auto")
    if name == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError(f"device {name!r} needs CUDA, but torch {torch.__version__} sees no CUDA device; "
                         "use --device cpu (or auto)")
    index = int(name.partition(":")[2] or 0)
    count = torch.cuda.device_count()
    if index >= count:
        raise ValueError(f"device {name!r} does not exist: torch sees {count} CUDA device(s), "
                         f"cuda:0 to cuda:{count - 1}")
    return torch.device("cuda", index)


def resolve_dtype(name: str, device) -> Any:
    """The torch dtype for `name` on `device`: auto is bfloat16 on CUDA and float32 elsewhere."""
    import torch

    if name not in DTYPE_NAMES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPE_NAMES)}, got {name!r}")
    if name == "auto":
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    return getattr(torch, name)
