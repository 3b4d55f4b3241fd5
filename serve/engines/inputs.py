"""From chat messages to model inputs: template, images, prompt length, the left-padded batch.

Counting prompt tokens runs on the gateway's event loop for every request, so it must not
preprocess pixels: the text is tokenized and each image placeholder is sized from the image
dimensions alone (as the processor's `_get_num_multimodal_tokens`, which vLLM uses too, sizes it).
A request the engine admits is then encoded once, on the caller's side (`PromptEncoder.encode`:
ids, token types, pixels), so the engine's thread or process only stacks prompts (`collate`)
instead of running the image processor between two decoding steps.

`PromptEncoder` tokenizes each prompt once: encoding continues from the ids counting made (each
image placeholder repeated to its image's size, as the processor expands it in the text before
tokenizing) and, for the Qwen-VL image processors, preprocesses the pixels with `pixels.QwenPixels`
(same values, a third of the time). Other processors go through `encode_one`, the processor's call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .base import EngineError
from .pixels import QwenPixels

__all__ = ["IMAGE_PAD", "Prepared", "PromptEncoder", "assistant_prefix", "collate", "collect_images", "encode_one",
           "image_parts", "render", "tokenizer_of"]

IMAGE_PAD = "<|image_pad|>"


def tokenizer_of(processor) -> Any:
    """The tokenizer of a processor; a text-only model's "processor" is its tokenizer."""
    return getattr(processor, "tokenizer", processor)


def _is_image(part: Any) -> bool:
    return isinstance(part, dict) and (part.get("type") == "image" or "image" in part)


def image_parts(messages: list[dict[str, Any]]) -> list[str]:
    """Where the image parts are, as `messages[i].content[j]`, in message and part order."""
    return [f"messages[{i}].content[{j}]" for i, message in enumerate(messages)
            if isinstance(message.get("content"), list) for j, part in enumerate(message["content"]) if _is_image(part)]


def collect_images(messages: list[dict[str, Any]]) -> list[Any]:
    """PIL images of all image parts, in message and part order (the order of the placeholders)."""
    from PIL import Image

    images = []
    for message in messages:
        content = message.get("content")
        if not isinstance(content, list):
            continue
        for part in content:
            if _is_image(part):
                img = part.get("image")
                if not isinstance(img, Image.Image):
                    raise EngineError(f"image parts must carry a decoded PIL image, got {type(img).__name__}")
                images.append(img)
    return images


def assistant_prefix(messages: list[dict[str, Any]]) -> str:
    """Text of a trailing assistant message (a prefix the completion continues), else ''."""
    if not messages or messages[-1].get("role") != "assistant":
        return ""
    content = messages[-1].get("content")
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content or [] if isinstance(p, dict))


def render(processor, messages: list[dict[str, Any]]) -> str:
    """The prompt text; a trailing assistant message is continued rather than closed."""
    if not messages:
        raise EngineError("messages must not be empty")
    cont = messages[-1].get("role") == "assistant"
    try:
        return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=not cont,
                                             continue_final_message=cont)
    except Exception as exc:  # noqa: BLE001 - template errors are request errors, not engine faults
        raise EngineError(f"cannot apply the chat template to these messages: {exc}") from exc


def image_tokens(processor, pixels: QwenPixels | None, text: str, images: list[Any]) -> list[int]:
    """How many tokens each image's placeholder expands to, from the image sizes alone; EngineError when the
    placeholders and the images disagree or the processor refuses an image's size."""
    placeholders = text.count(IMAGE_PAD)
    if placeholders != len(images):
        raise EngineError(f"the prompt has {placeholders} image placeholders but {len(images)} images")
    if not images:
        return []
    if pixels is None and not hasattr(processor, "_get_num_multimodal_tokens"):
        raise EngineError("this model takes no images; send the request without them")
    try:
        if pixels is not None:
            return [pixels.tokens(img.height, img.width) for img in images]
        return list(processor._get_num_multimodal_tokens(image_sizes=[(img.height, img.width) for img in images])
                    ["num_image_tokens"])
    except ValueError as exc:  # e.g. an aspect ratio the image processor refuses: the request's fault
        raise EngineError(f"unsupported image size: {exc}") from exc


@dataclass
class Prepared:
    """A rendered prompt, tokenized once: what counting needs and what encoding continues from."""

    text: str
    images: list[Any]
    prefix: str  # a trailing assistant message the completion continues (assistant_prefix)
    ids: list[int]  # the template's tokens, one placeholder token per image
    image_tokens: list[int]  # tokens each image's placeholder expands to

    @property
    def n_tokens(self) -> int:
        """The prompt's length after image expansion."""
        return len(self.ids) + sum(n - 1 for n in self.image_tokens)


class PromptEncoder:
    """Renders, counts and encodes chat prompts for one processor (one thread: it owns its tokenizer)."""

    def __init__(self, processor, tokenizer):
        self.processor, self.tokenizer = processor, tokenizer
        # A text-only model's "processor" is its tokenizer: it has no image processor, and takes no images.
        self.text_only = not hasattr(processor, "image_processor")
        self.image_token_id = getattr(processor, "image_token_id", None)
        self.pixels = QwenPixels.of(processor) if self.image_token_id is not None else None
        # Whether the processor's output carries token types (Qwen-VL processors do); the fast path matches it.
        self.token_types = "mm_token_type_ids" in processor(text=["a"], return_tensors="np")

    def prepare(self, messages: list[dict[str, Any]]) -> Prepared:
        """Render and tokenize (no pixel work); EngineError for a prompt the template or the images refuse."""
        images = collect_images(messages)
        if images and self.text_only:  # named before the template sees it: it may render no placeholder at all
            where = image_parts(messages)[0]
            raise EngineError(f"{where} is an image, but this model reads text only (it has no image processor); "
                              "send the request without images", param=where)
        text = render(self.processor, messages)
        ids = self.tokenizer(text)["input_ids"]  # same call (and special-token defaults) as the processor
        return Prepared(text, images, assistant_prefix(messages), ids,
                        image_tokens(self.processor, self.pixels, text, images))

    def encode(self, prepared: Prepared) -> dict[str, Any]:
        """The model inputs of `encode_one`, equal to the processor's, from the prepared ids."""
        import numpy as np

        if prepared.images and self.pixels is None:
            return encode_one(self.processor, prepared.text, prepared.images)
        ids = np.asarray(prepared.ids, dtype=np.int64)
        out: dict[str, Any] = {}
        if prepared.images:
            if int((ids == self.image_token_id).sum()) != len(prepared.images):  # placeholder text split oddly
                return encode_one(self.processor, prepared.text, prepared.images)
            repeats = np.ones(len(ids), dtype=np.int64)
            repeats[ids == self.image_token_id] = prepared.image_tokens
            ids = np.repeat(ids, repeats)
            out["pixel_values"], out["image_grid_thw"] = self.pixels(prepared.images)
        out["input_ids"] = ids
        if self.token_types:
            out["mm_token_type_ids"] = (ids == self.image_token_id).astype(np.int64)
        return out


def encode_one(processor, text: str, images: list[Any]) -> dict[str, Any]:
    """One prompt's model inputs as numpy arrays: input_ids, mm_token_type_ids, pixel_values, image_grid_thw."""
    try:
        enc = processor(text=[text], images=images or None, return_tensors="np")
    except Exception as exc:  # noqa: BLE001 - an image the processor refuses is the request's fault
        raise EngineError(f"cannot encode the prompt and its images: {exc}") from exc
    out = {"input_ids": enc["input_ids"][0]}
    if "mm_token_type_ids" in enc:
        out["mm_token_type_ids"] = enc["mm_token_type_ids"][0]
    if images:
        out["pixel_values"], out["image_grid_thw"] = enc["pixel_values"], enc["image_grid_thw"]
    return out


def collate(prompts: list[dict[str, Any]], pad_id: int, device, dtype) -> tuple[dict[str, Any], list[list[int]]]:
    """Stack `encode_one` outputs as the processor batches prompts: left-padded, pixels (or image features
    computed on the gateway's side, `transformers/gateway_vision.py`) concatenated.

    Returns the model inputs on `device` and each row's prompt ids (no padding).
    """
    import numpy as np
    import torch

    width = max(len(p["input_ids"]) for p in prompts)
    ids = np.full((len(prompts), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(prompts), width), dtype=np.int64)
    types = np.zeros((len(prompts), width), dtype=np.int64) if "mm_token_type_ids" in prompts[0] else None
    for row, p in enumerate(prompts):
        n = len(p["input_ids"])
        ids[row, width - n:], mask[row, width - n:] = p["input_ids"], 1
        if types is not None:
            types[row, width - n:] = p["mm_token_type_ids"]
    enc = {"input_ids": torch.from_numpy(ids).to(device), "attention_mask": torch.from_numpy(mask).to(device)}
    if types is not None:
        enc["mm_token_type_ids"] = torch.from_numpy(types).to(device)
    features = [p for p in prompts if "image_features" in p]  # the vision tower ran on the gateway's side
    if features:
        enc["image_features"] = torch.from_numpy(np.concatenate([p["image_features"] for p in features])).to(
            device=device, dtype=dtype)
        enc["deepstack_features"] = torch.from_numpy(np.concatenate([p["deepstack_features"] for p in features],
                                                                    axis=1)).to(device=device, dtype=dtype)
    grids = [p["image_grid_thw"] for p in prompts if "image_grid_thw" in p]
    if grids:
        enc["image_grid_thw"] = torch.from_numpy(np.concatenate(grids)).to(device)
    pixels = [p["pixel_values"] for p in prompts if "pixel_values" in p]
    if pixels:
        enc["pixel_values"] = torch.from_numpy(np.concatenate(pixels)).to(device=device, dtype=dtype)
    return enc, [p["input_ids"].tolist() for p in prompts]
