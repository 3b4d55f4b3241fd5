"""ShapeWorld: seeded synthetic tasks mirroring the six OpenVLThinkerV2 task families.

Used to train and evaluate the tiny offline model; see `generator.generate` and `split`.
"""

from .common import COLORS, OCR_WORDS, PALETTE, SHAPES, SIZES
from .generator import (
    EVAL_SEED_BASE, FAMILIES, SHAPEWORLD_VERSION, SPLITS, Sample, corpus_texts, generate, split,
    split_seed, vocabulary_texts, write_split,
)
from .scene import Shape, render_scene, unique_descriptions
from .shape_tasks import count_matching

__all__ = [
    "COLORS", "EVAL_SEED_BASE", "FAMILIES", "OCR_WORDS", "PALETTE", "SHAPES", "SHAPEWORLD_VERSION",
    "SIZES", "SPLITS", "Sample", "Shape", "corpus_texts", "count_matching", "generate",
    "render_scene", "split", "split_seed", "unique_descriptions", "vocabulary_texts", "write_split",
]
