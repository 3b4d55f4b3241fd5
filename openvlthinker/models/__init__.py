"""Load a model and processor from a local folder or hub id, offline-safe.

Importing this package stays light: ``loading`` and ``lora`` import torch, transformers and
peft inside their functions, and the processor class (which imports transformers) is
resolved on first attribute access.
"""

from openvlthinker.models.loading import (DEFAULT_MODEL, ModelNotFoundError, is_vision_language, load, load_processor,
                                         load_prompt_processor, resolve_model_path)
from openvlthinker.models.lora import LORA_TARGET_MODULES, LORA_TARGET_REGEX, lora_config, random_lora
from openvlthinker.models.placement import check_placement, resolve_device, resolve_dtype

__all__ = ["DEFAULT_MODEL", "LORA_TARGET_MODULES", "LORA_TARGET_REGEX", "ModelNotFoundError",
           "Qwen3VLImageOnlyProcessor", "check_placement", "is_vision_language", "load", "load_processor",
           "load_prompt_processor", "lora_config", "random_lora", "resolve_device", "resolve_dtype", "resolve_model_path"]


def __getattr__(name):
    # The processor module imports transformers at import time; defer it until asked for.
    if name == "Qwen3VLImageOnlyProcessor":
        from openvlthinker.models.processor import Qwen3VLImageOnlyProcessor

        return Qwen3VLImageOnlyProcessor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
