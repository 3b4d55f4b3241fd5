"""Shared fixtures: one tiny Qwen3-VL folder built in a temp dir for the whole session."""

import pytest
from PIL import Image, ImageDraw

from openvlthinker.tiny.build import build_tiny, sample_texts


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    return build_tiny(tmp_path_factory.mktemp("tiny") / "model", sample_texts(), seed=0)


@pytest.fixture(scope="session")
def tiny(tiny_dir):
    from openvlthinker.models import load

    return load(tiny_dir)


def shape_image(w=128, h=128, color="red"):
    """A small ShapeWorld-like picture: one filled circle on white."""
    img = Image.new("RGB", (w, h), "white")
    ImageDraw.Draw(img).ellipse((w // 4, h // 4, w // 2, h // 2), fill=color)
    return img


@pytest.fixture
def image():
    return shape_image


def user_turn(question, n_images=1):
    """One user message with ``n_images`` image parts and a question, as clients send it."""
    return [{"role": "user", "content": [{"type": "image"}] * n_images + [{"type": "text", "text": question}]}]


@pytest.fixture
def turn():
    return user_turn


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Run these tiny-tensor tests on one intra-op thread, restoring the setting afterwards.

    On small shared CPU boxes torch's default threading made each op ~10-40x slower
    (a LoRA step went from ~0.1 s to ~5 s); tiny matrices gain nothing from threads.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
