"""Prompts encoded one by one on the caller's side and stacked in the engine equal the processor's own batch."""

import numpy as np
import torch

from openvlthinker.models import load_processor
from serve.engines.inputs import collate, encode_one, render


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
    import pytest
    from PIL import Image

    from serve.engines.base import EngineError

    processor = load_processor(str(tiny_dir))
    text = render(processor, h.user("Count.", [h.shape_image()]))
    with pytest.raises(EngineError, match="cannot encode"):
        encode_one(processor, text, [Image.new("RGB", (1, 1000))])  # aspect ratio beyond the processor's limit
