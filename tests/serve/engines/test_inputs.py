"""Prompts encoded one by one on the caller's side and stacked in the engine equal the processor's own batch;
the prompt encoder's one-tokenization path and the numpy pixels equal the processor's output exactly."""

import copy

import numpy as np
import pytest
import torch
from PIL import Image

from openvlthinker.models import load_processor
from serve.engines.base import EngineError
from serve.engines.inputs import PromptEncoder, collate, collect_images, encode_one, render
from serve.engines.pixels import QwenPixels


def test_collated_prompts_equal_the_processor_batch(tiny_dir, h):
    processor = load_processor(str(tiny_dir))
    img = h.shape_image
    convs = [h.user("Count."), h.user("How many red circles are in this picture?", [img()]),
             h.user("What is the box?", [img(96, 160, "blue"), img(200, 90, "green")])]
    texts = [render(processor, m) for m in convs]
    images = [[part["image"] for part in m[0]["content"] if part.get("type") == "image"] for m in convs]
    one = [encode_one(processor, t, i) for t, i in zip(texts, images)]
    assert all(isinstance(v, np.ndarray) for p in one for v in p.values())  # what crosses the process pipe
    got, got_ids = collate(one, processor.tokenizer.pad_token_id, "cpu", torch.float32)
    ref = processor(text=texts, images=[i for imgs in images for i in imgs], return_tensors="pt", padding=True,
                    padding_side="left")  # the processor's own left-padded batch
    assert set(got) == set(ref) - {"token_type_ids"}
    for key in got:
        assert torch.equal(got[key], ref[key].to(got[key].dtype)), key
    assert got_ids == [row[m.bool()].tolist() for row, m in zip(ref["input_ids"], ref["attention_mask"])]


def test_an_image_the_processor_refuses_is_an_engine_error(tiny_dir, h):
    processor = load_processor(str(tiny_dir))
    text = render(processor, h.user("Count.", [h.shape_image()]))
    with pytest.raises(EngineError, match="cannot encode"):
        encode_one(processor, text, [Image.new("RGB", (1, 1000))])  # aspect ratio beyond the processor's limit


def _noise(w: int, h: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    """Random pixels: every byte value and channel difference the normalisation has to get right."""
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    data = np.random.default_rng(seed).integers(0, 256, (h, w, channels), dtype=np.uint8)
    return Image.fromarray(data[..., 0] if channels == 1 else data, mode)


@pytest.mark.parametrize("size", [(128, 128), (96, 160), (300, 100), (77, 333), (40, 40), (130, 129)])
@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L"])
def test_numpy_pixels_equal_the_image_processor_bit_for_bit(tiny_dir, size, mode):
    image_processor = load_processor(str(tiny_dir)).image_processor
    pixels = QwenPixels.of(image_processor)
    image = _noise(*size, mode)
    ref = image_processor(images=[image], return_tensors="np")
    values, grid = pixels([image])
    assert values.dtype == ref["pixel_values"].dtype and np.array_equal(values, ref["pixel_values"])
    assert np.array_equal(grid, ref["image_grid_thw"])
    assert pixels.tokens(image.height, image.width) == int(np.prod(grid)) // 4  # 2 x 2 patches per token


def test_numpy_pixels_take_only_the_processors_they_reproduce(tiny_dir):
    image_processor = load_processor(str(tiny_dir)).image_processor
    assert QwenPixels.of(image_processor) is not None
    changed = copy.deepcopy(image_processor)
    changed.do_normalize = False  # a step the numpy path always applies
    assert QwenPixels.of(changed) is None
    assert QwenPixels.of(object()) is None


def test_prompt_encoder_equals_the_processor_and_tokenizes_once(tiny_dir, h):
    processor = load_processor(str(tiny_dir))
    encoder = PromptEncoder(processor, copy.deepcopy(processor.tokenizer))
    assert encoder.pixels is not None  # the numpy path is the one under test
    continued = h.user("What is the box?", [h.shape_image()]) + [{"role": "assistant", "content": "<thinking>"}]
    convs = [h.user("Count."), h.user("How many red circles?", [_noise(128, 128)]),
             h.user("Compare.", [_noise(96, 160, "RGBA", 1), _noise(300, 100, "L", 2)]), continued]
    for messages in convs:
        prepared = encoder.prepare(messages)
        got = encoder.encode(prepared)
        ref = encode_one(processor, render(processor, messages), collect_images(messages))
        assert set(got) == set(ref)
        for key in ref:
            assert got[key].dtype == ref[key].dtype and np.array_equal(got[key], ref[key]), key
        assert prepared.n_tokens == len(ref["input_ids"])
    assert encoder.prepare(continued).prefix == "<thinking>"


def test_prompt_encoder_on_a_text_only_model(tmp_path, h):
    from transformers import AutoTokenizer

    from openvlthinker.tiny.text_model import build_text_model

    tokenizer = AutoTokenizer.from_pretrained(build_text_model(tmp_path / "text"))  # a causal LM's "processor"
    encoder = PromptEncoder(tokenizer, copy.deepcopy(tokenizer))
    messages = h.user("Count.")
    got = encoder.encode(encoder.prepare(messages))
    ref = encode_one(tokenizer, render(tokenizer, messages), [])
    assert set(got) == set(ref) and np.array_equal(got["input_ids"], ref["input_ids"])
    with pytest.raises(EngineError, match=r"messages\[0\]\.content\[0\] is an image.*text only") as info:
        encoder.prepare(h.user("Count.", [h.shape_image()]))
    assert info.value.param == "messages[0].content[0]"


def test_prompt_encoder_refuses_what_the_processor_refuses(tiny_dir, h):
    processor = load_processor(str(tiny_dir))
    encoder = PromptEncoder(processor, copy.deepcopy(processor.tokenizer))
    with pytest.raises(EngineError, match="unsupported image size"):
        encoder.prepare(h.user("Count.", [Image.new("RGB", (1, 1000))]))  # aspect ratio beyond the limit
    mismatched = h.user("Count.", [h.shape_image()])
    mismatched[0]["content"].append({"type": "text", "text": "<|image_pad|>"})  # a placeholder with no image
    with pytest.raises(EngineError, match="placeholders"):
        encoder.prepare(mismatched)
