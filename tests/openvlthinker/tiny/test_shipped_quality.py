"""The shipped checkpoint's eval: the output format, and the families where seeing the image pays.

A regression guard for retraining (`openvlthinker train-tiny`): the format is kept on every
family, and on grounding, spatial reasoning, attributes (general VQA), counting (math) and charts
the model scores above the same questions asked with another question's image. Reading text (OCR)
is at that baseline: the 64-wide vision tower does not resolve glyphs (README, issue #3), so it is
not asserted here.
"""

import pytest
import torch

from openvlthinker.evaluation import evaluate, load_eval_data, shuffle_images, summarise
from openvlthinker.models import DEFAULT_MODEL, load

SEEING_FAMILIES = ("spatial_grounding", "spatial_reasoning", "general_vqa", "math_reasoning", "chart")


@pytest.mark.slow
def test_format_everywhere_and_images_help_where_the_readme_says():
    torch.set_num_threads(1)
    model, processor = load(DEFAULT_MODEL)
    data = load_eval_data("shapeworld:eval:50")
    real = summarise(evaluate(model, processor, data, progress=False))
    shuffled = summarise(evaluate(model, processor, shuffle_images(data), progress=False))
    assert all(row["format_rate"] >= 0.95 for row in real.values()), real
    for family in SEEING_FAMILIES:
        assert real[family]["accuracy"] > shuffled[family]["accuracy"], (family, real[family], shuffled[family])
    assert real["all"]["accuracy"] > shuffled["all"]["accuracy"]
