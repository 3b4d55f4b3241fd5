"""The vision stage: per-cell targets line up with the processor's merged tokens, and it learns."""

import math

import numpy as np
import pytest
import torch

from openvlthinker.tiny.see import (
    KINDS, Element, SeeHeads, cell_targets, family_weights, pretrain_vision, scene_elements, see_loss, targets_for,
)
from openvlthinker.tiny.shapeworld import FAMILIES, generate
from openvlthinker.tiny.shapeworld.common import COLORS, OCR_WORDS, PALETTE
from openvlthinker.tiny.train import TrainConfig, build_untrained


def test_an_element_lands_in_the_cell_of_its_centre_and_the_largest_wins():
    small = Element("circle", (40, 40, 50, 50), "red", "small")  # centre (45, 45): row 1, col 1
    large = Element("square", (36, 34, 60, 58), "blue", "large")  # centre (48, 46): same cell
    word = Element("word", (100, 100, 120, 110), word="cat")  # centre (110, 105): row 3, col 3
    t = cell_targets([small, large, word], rows=4, cols=4, image_size=128)
    assert t["kind"].tolist() == [0] * 5 + [KINDS.index("square")] + [0] * 9 + [KINDS.index("word")]
    assert t["color"][5] == 1 + COLORS.index("blue") and t["color"][15] == -100  # words have no colour
    # Words are learnt only where there is one: every other cell is ignored by the word loss.
    assert t["word"][15] == OCR_WORDS.index("cat") and t["word"][5] == -100 and t["word"][0] == -100
    assert t["box"][5].tolist() == pytest.approx([36 / 128, 34 / 128, 60 / 128, 58 / 128])
    assert math.isnan(t["box"][0, 0]) and math.isnan(t["value"][5])


@pytest.mark.parametrize("family", FAMILIES)
def test_every_scene_element_is_found_by_its_cell(family):
    for seed in range(5):
        sample = generate(family, seed)
        elements = scene_elements(sample.record.extra["scene"])
        assert elements and all(0 <= v <= 128 for e in elements for v in e.box)
        t = cell_targets(elements, 4, 4, 128)
        # Each element owns a cell unless a larger one has its centre in the same cell.
        assert 1 <= int((t["kind"] > 0).sum()) <= len(elements)


def test_cell_order_matches_the_processors_merged_tokens():
    """The token the targets call 'red square' is the one whose pixels are red."""
    _, _, processor = build_untrained(TrainConfig(steps=1, vocab_size=300, tokenizer_corpus=50))
    for seed in range(6):
        sample = generate("spatial_grounding", seed)
        enc = processor.image_processor([sample.image], return_tensors="pt")
        t = targets_for([sample], enc["image_grid_thw"], merge=2)
        # pixel_values rows: 4 patches per merged token, each (3 channels, 2 frames, 16, 16), normalised.
        pix = enc["pixel_values"].view(16, 4, 3, 2, 16, 16).permute(0, 1, 3, 4, 5, 2).reshape(16, -1, 3)
        rgb = ((pix + 1) * 127.5).round()
        for cell in (t["kind"] > 0).nonzero().flatten().tolist():
            color = COLORS[int(t["color"][cell]) - 1]
            hit = (rgb - torch.tensor(PALETTE[color], dtype=torch.float)).abs().sum(-1) < 8
            assert hit.any(), f"seed {seed}: no {color} pixel in cell {cell}"


def test_word_boxes_cover_the_ink():
    for seed in range(20):
        scene = generate("ocr", seed).record.extra["scene"]
        assert len(scene["word_boxes"]) == len(scene["words"])
        image = np.asarray(generate("ocr", seed).image).astype(int)
        ink = np.abs(image - scene["background"]).sum(-1) > 60
        covered = np.zeros_like(ink)
        for x1, y1, x2, y2 in scene["word_boxes"]:
            covered[y1:y2, x1:x2] = True
        assert (ink & ~covered).sum() == 0


def test_loss_parts_and_masking():
    heads = SeeHeads(8)
    tokens = torch.randn(16, 8)
    t = cell_targets([Element("bar", (10, 10, 20, 60), "red", value=0.4)], 4, 4, 128)
    total, parts = see_loss(heads(tokens), t)
    assert set(parts) == {"kind", "color", "size", "word", "box", "value"}
    assert torch.isfinite(total) and total.requires_grad
    empty = cell_targets([], 4, 4, 128)
    total, parts = see_loss(heads(tokens), empty)  # no box, value or word anywhere: those parts are 0
    assert parts["box"] == 0 and parts["value"] == 0 and parts["word"] == 0 and torch.isfinite(total)
    total.backward()  # still a graph to step on


def test_family_weights_give_ocr_its_share_and_the_rest_evenly():
    weights = family_weights(FAMILIES, 0.5)
    assert sum(weights) == pytest.approx(1) and weights[FAMILIES.index("ocr")] == 0.5
    assert len({w for f, w in zip(FAMILIES, weights) if f != "ocr"}) == 1
    assert family_weights(("chart", "math_reasoning"), 0.5) == [1.0, 1.0]  # no OCR: even
    assert family_weights(("ocr",), 0.3) == [1.0]


@pytest.mark.slow
def test_the_vision_stage_lowers_its_loss_and_only_touches_the_vision_tower():
    torch.manual_seed(0)
    model, _, processor = build_untrained(TrainConfig(steps=1, vocab_size=300, tokenizer_corpus=50))
    text_before = {k: v.clone() for k, v in model.model.language_model.state_dict().items()}
    vision_before = model.model.visual.patch_embed.proj.weight.clone()
    log = pretrain_vision(model, processor, steps=60, batch_size=8, lr=2e-3, families=FAMILIES, image_size=128,
                          seed=0, progress=False, weights=family_weights(FAMILIES, 0.5))
    assert log[-1]["loss"] < 0.6 * log[0]["loss"]
    assert not torch.equal(vision_before, model.model.visual.patch_embed.proj.weight)
    assert all(torch.equal(v, model.model.language_model.state_dict()[k]) for k, v in text_before.items())
    assert not model.model.visual.training


def test_config_rejects_negative_vision_steps():
    with pytest.raises(ValueError, match="see_steps"):
        TrainConfig(see_steps=-1)
