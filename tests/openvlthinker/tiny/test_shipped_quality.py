"""The shipped checkpoint's eval: the output format, and seeing the image pays on every family.

A regression guard for retraining (`openvlthinker train-tiny`): the format is kept on every
family, and on each of the six (grounding, spatial reasoning, attributes, counting, charts and
reading text) the model scores above the same questions asked with another question's image.
"""

import pytest
import torch

from openvlthinker.evaluation import evaluate, load_eval_data, shuffle_images, summarise
from openvlthinker.models import DEFAULT_MODEL, load
from openvlthinker.tiny.shapeworld import FAMILIES


@pytest.mark.slow
def test_format_everywhere_and_images_help_on_every_family():
    torch.set_num_threads(1)
    model, processor = load(DEFAULT_MODEL)
    data = load_eval_data("shapeworld:eval:50")
    real = summarise(evaluate(model, processor, data, progress=False))
    shuffled = summarise(evaluate(model, processor, shuffle_images(data), progress=False))
    assert all(row["format_rate"] >= 0.95 for row in real.values()), real
    for family in FAMILIES:
        assert real[family]["accuracy"] > shuffled[family]["accuracy"], (family, real[family], shuffled[family])
    assert real["all"]["accuracy"] > shuffled["all"]["accuracy"]
