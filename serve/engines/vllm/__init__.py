"""The vLLM engine: vLLM's OpenAI server as a child process (process.py), spoken to over HTTP (engine.py), with
the thinking budget enforced in passes (decode.py). Nothing here imports vLLM itself."""

from .engine import VllmEngine
from .process import VllmLaunch

__all__ = ["VllmEngine", "VllmLaunch"]
