"""Image-only Qwen3-VL processor that works without torchvision.

In transformers 5.x the Qwen2-VL/Qwen2.5-VL/Qwen3-VL processors take a video processor,
and every Qwen video processor needs torchvision, which has no CPU build for this machine.
This subclass drops the video slot from the constructor signature (transformers derives the
sub-processor list from the ``__init__`` signature), so it is built from a tokenizer and the
PIL image processor (``Qwen2VLImageProcessorPil``) alone. Everything else (placeholder
expansion, ``mm_token_type_ids``, chat templates, decoding) is inherited unchanged, so the
tiny model and real Qwen3-VL checkpoints go through the same code.

Importing this module imports transformers; import it lazily.
"""

from __future__ import annotations

from transformers import AutoProcessor
from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor

__all__ = ["Qwen3VLImageOnlyProcessor", "pil_image_processor"]

# Key under which the class is registered with AutoProcessor. A string key (not a config
# class) leaves the stock qwen3_vl -> Qwen3VLProcessor mapping untouched while letting
# AutoProcessor resolve ``"processor_class": "Qwen3VLImageOnlyProcessor"`` by name.
_AUTO_KEY = "openvlthinker_qwen3_vl_image_only"


class Qwen3VLImageOnlyProcessor(Qwen3VLProcessor):
    """Qwen3-VL processor with an image processor and a tokenizer, and no video processor."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        # The parent forwards (image_processor, tokenizer, None) positionally; ProcessorMixin
        # zips them with get_attributes() == ["image_processor", "tokenizer"], dropping the None.
        super().__init__(
            image_processor=image_processor,
            tokenizer=tokenizer,
            video_processor=None,
            chat_template=chat_template,
            **kwargs,
        )

    def __call__(self, images=None, text=None, videos=None, **kwargs):
        """Tokenize text and preprocess images; videos are refused with a clear error."""
        if videos is not None:
            # Without this check ProcessorMixin silently ignores the videos (no video_processor).
            raise ValueError(f"{type(self).__name__} handles images only; videos are not supported.")
        return super().__call__(images=images, text=text, **kwargs)


def pil_image_processor(min_pixels: int, max_pixels: int, patch_size: int = 16, merge_size: int = 2,
                        temporal_patch_size: int = 2):
    """Build a Qwen3-VL-style PIL image processor (Qwen3-VL uses mean/std 0.5, patch 16)."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil(
        size={"shortest_edge": min_pixels, "longest_edge": max_pixels},
        patch_size=patch_size,
        temporal_patch_size=temporal_patch_size,
        merge_size=merge_size,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )


def _register() -> None:
    """Let AutoProcessor find the class by the name saved in processor_config.json.

    Only after this module is imported: in a fresh process AutoProcessor cannot resolve the
    name and (without torchvision) silently falls back to returning the bare tokenizer, so
    callers should use :func:`openvlthinker.models.load_processor`.
    """
    # Idempotent: re-registering the same key just overwrites it (exist_ok=True).
    AutoProcessor.register(_AUTO_KEY, Qwen3VLImageOnlyProcessor, exist_ok=True)


_register()
