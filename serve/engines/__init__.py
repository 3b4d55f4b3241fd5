"""Engines that turn a GenerationRequest into tokens: transformers (embedded) and vLLM (production)."""

from .base import Engine, EngineError, EngineFailed, EngineOverloaded, EngineUnavailable, GenerationRequest, GenerationResult, SamplingParams, TokenEvent
from .transformers_engine import TransformersEngine  # light: torch/transformers load in start()

__all__ = ["Engine", "EngineError", "EngineFailed", "EngineOverloaded", "EngineUnavailable", "GenerationRequest", "GenerationResult", "SamplingParams",
           "TokenEvent", "TransformersEngine"]
