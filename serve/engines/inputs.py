"""From chat messages to model inputs: template, images, prompt length, the left-padded batch.

Counting prompt tokens runs on the gateway's event loop for every request, so it must not
preprocess pixels: the text is tokenized and each image placeholder is sized from the image
dimensions alone (the processor's own `_get_num_multimodal_tokens`, which vLLM uses too).
A request the engine admits is then encoded once, on the caller's side (`encode_one`: ids,
token types, pixels), so the engine's thread or process only stacks prompts (`collate`)
instead of running the image processor between two decoding steps.
"""

from __future__ import annotations

from typing import Any

from .base import EngineError

__all__ = ["IMAGE_PAD", "assistant_prefix", "collate", "collect_images", "count_tokens", "encode_one", "render"]

IMAGE_PAD = "<|image_pad|>"


def collect_images(messages: list[dict[str, Any]]) -> list[Any]:
    """PIL images of all image parts, in message and part order (the order of the placeholders)."""
    from PIL import Image

    images = []
    for message in messages:
        content = message.get("content")
        if not isinstance(content, list):
            continue
        for part in content:
            if isinstance(part, dict) and (part.get("type") == "image" or "image" in part):
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


def count_tokens(tokenizer, processor, text: str, images: list[Any]) -> int:
    """Prompt length after image expansion, without touching pixels (tokenizer: a private copy)."""
    n_text = len(tokenizer(text)["input_ids"])  # same call (and special-token defaults) as the processor
    placeholders = text.count(IMAGE_PAD)
    if placeholders != len(images):
        raise EngineError(f"the prompt has {placeholders} image placeholders but {len(images)} images")
    if not images:
        return n_text
    sizes = [(img.height, img.width) for img in images]
    try:
        per_image = processor._get_num_multimodal_tokens(image_sizes=sizes)["num_image_tokens"]
    except ValueError as exc:  # e.g. an aspect ratio the image processor refuses: the request's fault
        raise EngineError(f"unsupported image size: {exc}") from exc
    # Each placeholder is one token in `text` and expands to per_image[i] tokens.
    return n_text + sum(n - 1 for n in per_image)


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
    computed on the gateway's side, `gateway_vision.py`) concatenated.

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
