"""The embedded engine: HF transformers with continuous batching, in a thread or a child process (engine.py)."""

from .engine import TransformersEngine  # light: torch/transformers load in start()

__all__ = ["TransformersEngine"]
