"""Peak memory of one training step, on CUDA or the CPU, for the update's metrics.

CUDA: the caching allocator's peak (`torch.cuda.max_memory_allocated`), reset when the step
starts; it counts the weights, optimizer state, activations and logits the step holds, not the
allocator's reserve or other processes. CPU: the process's peak resident set (VmHWM), which
Linux resets when "5" is written to /proc/self/clear_refs, so each step gets its own peak.
Where that reset is refused (not Linux, a locked-down /proc), the lifetime peak of
`resource.getrusage` stands in, and a step shows growth only when it sets a new record.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

import torch

__all__ = ["StepMemory"]

_MB = 2**20


class StepMemory:
    """Context manager: `peak_mb` (the step's peak) and `growth_mb` (that peak less the memory at its start)."""

    def __init__(self, device: str | torch.device):
        self.device = torch.device(device)
        self.peak_mb = self.growth_mb = 0.0
        self._start = 0

    def __enter__(self) -> "StepMemory":
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
        else:
            self._start = _rss_bytes() if _reset_peak_rss() else _lifetime_peak_rss()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            peak = _status_bytes("VmHWM") or _lifetime_peak_rss()
        self.peak_mb, self.growth_mb = peak / _MB, max(0, peak - self._start) / _MB


def _reset_peak_rss() -> bool:
    """Reset the process's peak RSS (Linux >= 4.0); False when the kernel or /proc refuses."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _status_bytes("VmHWM") is not None


def _rss_bytes() -> int:
    return _status_bytes("VmRSS") or 0


def _status_bytes(key: str) -> int | None:
    """A memory line of /proc/self/status (reported in kB) in bytes, or None where there is none."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _lifetime_peak_rss() -> int:
    """The process's peak RSS so far in bytes (ru_maxrss is kB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024
