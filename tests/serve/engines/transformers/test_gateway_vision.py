"""The vision tower on the gateway's side of the engine process: the features the engine would compute,
only for Qwen3-VL folders; and adapters that reach into the tower are refused (their features would differ)."""

import numpy as np
import pytest
import torch

from serve.engines.base import EngineError
from serve.engines.transformers.gateway_vision import GatewayVision
from openvlthinker.models.lean_vision import LeanVision


def test_gateway_features_equal_the_engines_tower(tiny_dir, h):
    from openvlthinker.models import load
    from serve.engines.inputs import collect_images, encode_one, render

    model, processor = load(str(tiny_dir))
    vision = GatewayVision.load(str(tiny_dir))
    assert vision is not None
    messages = h.user("What is the box?", [h.shape_image(96, 160, "blue"), h.shape_image()])
    inputs = encode_one(processor, render(processor, messages), collect_images(messages))
    sent = vision.encode(inputs)
    assert "pixel_values" not in sent and np.array_equal(sent["image_grid_thw"], inputs["image_grid_thw"])
    with torch.inference_mode():
        features, deepstack = LeanVision.build(model.model.visual)(torch.from_numpy(inputs["pixel_values"]),
                                                                   torch.from_numpy(inputs["image_grid_thw"]))
    assert torch.equal(torch.from_numpy(sent["image_features"]), features)
    assert sent["deepstack_features"].shape == (len(deepstack), *features.shape)
    assert all(torch.equal(torch.from_numpy(a), b) for a, b in zip(sent["deepstack_features"], deepstack))
    # What crosses the pipe: the merged features, a fraction of the patch pixels.
    assert sent["image_features"].nbytes + sent["deepstack_features"].nbytes < inputs["pixel_values"].nbytes / 4
    text_only = encode_one(processor, render(processor, h.user("Count.")), [])
    assert vision.encode(text_only) is text_only
    bad = dict(inputs, image_grid_thw=np.array([[1, 4, 4]]))  # the grid disagrees with the pixels
    with pytest.raises(EngineError, match="cannot encode the images"):
        vision.encode(bad)


def test_only_qwen3_vl_folders_get_a_gateway_tower(tmp_path):
    from openvlthinker.tiny.text_model import build_text_model

    assert GatewayVision.load(str(build_text_model(tmp_path / "text"))) is None


def test_the_engine_process_takes_image_features_from_the_gateway(engine_variants):
    """The process engine's equality with the thread engine (test_process_runner) runs through this path."""
    from serve.engines.transformers.process_runner import ProcessRunner
    from serve.engines.transformers.thread_runner import ThreadRunner

    pair = engine_variants("process", (False, True))
    assert isinstance(pair[True]._runner, ProcessRunner) and pair[True]._runner.vision is not None
    assert isinstance(pair[False]._runner, ThreadRunner)  # the thread's core runs the tower itself


def test_adapters_with_lora_in_the_vision_tower_are_refused(tiny_dir, tmp_path, make_engine):
    import asyncio

    from peft import LoraConfig, get_peft_model

    from openvlthinker.models import load

    model, _ = load(str(tiny_dir))
    get_peft_model(model, LoraConfig(r=2, target_modules=["qkv", "q_proj"])).save_pretrained(tmp_path / "vision-lora")
    engine = make_engine()
    with pytest.raises(EngineError, match="vision tower.*language model only"):
        asyncio.run(engine.load_adapter("v-vision", str(tmp_path / "vision-lora")))
    assert "v-vision" not in engine.loaded_adapters()
