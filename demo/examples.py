"""One-click examples: a few ShapeWorld images, rendered deterministically at start-up, with their questions.

They come from the same generator the tiny model was trained on, so a new user sees it answer
something it can actually do; nothing is downloaded and no binary is shipped for them.
"""

from __future__ import annotations

from pathlib import Path

# (family, seed): a counting question that thinks, an attribute question, a spatial relation and a chart.
EXAMPLES = (("math_reasoning", 3), ("general_vqa", 1), ("spatial_reasoning", 2), ("chart", 4))


def question(problem: str) -> str:
    """The record's problem without the `<image>` placeholder (the demo sends the image as its own part)."""
    return problem.replace("<image>", "").strip()


def write_examples(folder: str | Path, size: int = 128) -> list[dict]:
    """Render the examples into `folder`; returns MultimodalTextbox values `{"text", "files": [path]}`."""
    from openvlthinker.tiny.shapeworld import generate

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    values = []
    for family, seed in EXAMPLES:
        sample = generate(family, seed, image_size=size)
        path = folder / f"{family}-{seed}.png"
        sample.image.save(path)  # 128 px by default: the size the tiny model was trained on
        values.append({"text": question(sample.record.problem), "files": [str(path)]})
    return values
