"""The lean vision tower equals the model's: features in inference, and gradients when it trains."""

import pytest
import torch

from openvlthinker.models.lean_vision import LeanVision


def _batches(image):
    return ([image()] * 3, [image(96, 160, "blue"), image()])


def test_lean_vision_equals_the_tower_for_equal_and_different_image_sizes(tiny, image):
    model, processor = tiny
    lean = LeanVision.build(model.model.visual)
    for images in _batches(image):
        enc = processor.image_processor(images=images, return_tensors="pt")
        with torch.inference_mode():
            ref = model.model.visual(enc["pixel_values"], grid_thw=enc["image_grid_thw"], return_dict=True)
            features, deepstack = lean(enc["pixel_values"], enc["image_grid_thw"])
            again, _ = lean(enc["pixel_values"], enc["image_grid_thw"])  # the grid inputs now come from the cache
        assert torch.allclose(features, ref.pooler_output, atol=1e-5) and torch.equal(again, features)
        assert len(deepstack) == len(ref.deepstack_features)
        assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(deepstack, ref.deepstack_features))


@pytest.mark.parametrize("batch", [0, 1], ids=["equal sizes", "different sizes"])
def test_training_through_the_lean_tower_gives_the_modules_gradients(tiny, image, batch):
    model, processor = tiny
    visual = model.model.visual
    lean = LeanVision.build(visual)
    enc = processor.image_processor(images=_batches(image)[batch], return_tensors="pt")
    pixels, grid = enc["pixel_values"], enc["image_grid_thw"]
    torch.manual_seed(0)
    probe = torch.randn(visual(pixels, grid_thw=grid).pooler_output.shape)

    def grads(features: torch.Tensor) -> dict[str, torch.Tensor]:
        visual.zero_grad(set_to_none=True)
        (features * probe).sum().backward()
        return {n: p.grad.clone() for n, p in visual.named_parameters() if p.grad is not None}

    ref = grads(visual(pixels, grid_thw=grid).pooler_output)
    for _ in range(2):  # the second call takes its grid inputs from the cache, which must hold no graph
        got = grads(lean.forward(pixels, grid)[0])
        # Every parameter on the merged features' path gets its gradient: patch embedding, position table, blocks.
        assert set(got) == set(ref) and {"patch_embed.proj.weight", "pos_embed.weight"} <= set(got)
        for name in ref:
            assert torch.allclose(got[name], ref[name], atol=1e-4, rtol=1e-3), name
    visual.zero_grad(set_to_none=True)
