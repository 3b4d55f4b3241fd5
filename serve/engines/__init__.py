"""Engines that turn a GenerationRequest into tokens: transformers (embedded) and vLLM (production)."""

from .base import Engine, EngineError, EngineFailed, EngineOverloaded, EngineUnavailable, GenerationRequest, GenerationResult, SamplingParams, TokenEvent
from .transformers import TransformersEngine  # light: torch/transformers load in start()
from .vllm import VllmEngine  # light: vLLM runs in a child process, spoken to over HTTP

__all__ = ["Engine", "EngineError", "EngineFailed", "EngineOverloaded", "EngineUnavailable", "GenerationRequest", "GenerationResult", "SamplingParams",
           "TokenEvent", "TransformersEngine", "VllmEngine"]
