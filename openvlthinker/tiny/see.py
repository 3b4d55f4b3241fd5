"""Stage 1 of tiny-model training: teach the vision tower to see before the language model reads it.

Supervised fine-tuning alone gives the vision tower a weak signal: a task answer depends on the
image through one or two tokens, and the language model can lower its loss from text priors
first. Here every merged visual token gets dense targets of its own, read off the ShapeWorld
scene: what element (shape, bar or word) has its centre in the token's cell, its colour, size,
word and bar value, and its exact box. Linear heads on the merger output learn them, so the
features the language model later receives already say what is where. The heads are dropped
afterwards; the architecture of the shipped model does not change.

Reading words is what the tower learns last and slowest: a 16-px patch holds a letter and a half
at any offset, and an OCR image has two or three word cells among sixteen. So the word loss is
taken over the cells that hold a word only (over all cells, "no word" swamped it and word accuracy
stayed at 0), and OCR images make up a larger share of this stage's batches (`family_weights`).
The tower trains through the lean forward (`openvlthinker.models.lean_vision`), about twice as fast
as the module's, which is what pays for the longer stage.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from openvlthinker.models.lean_vision import LeanVision
from openvlthinker.tiny.shapeworld.common import COLORS, OCR_WORDS, SHAPES, SIZES

KINDS = ("none", *SHAPES, "bar", "word")
CELL_PX = 32  # patch 16 x spatial merge 2: the pixels behind one merged visual token
IGNORE = -100


@dataclass(frozen=True)
class Element:
    """One thing in a scene that a cell can hold."""

    kind: str
    box: tuple[float, float, float, float]
    color: str | None = None
    size: str | None = None
    word: str | None = None
    value: float | None = None


def scene_elements(scene: dict) -> list[Element]:
    """The shapes, bars or words of a ShapeWorld scene with their boxes."""
    if "objects" in scene:
        return [Element(o["shape"], tuple(o["box"]), o["color"], o["size"]) for o in scene["objects"]]
    if "bars" in scene:
        axis = scene.get("axis_max", 10)
        return [Element("bar", tuple(b["box"]), scene["bar_color"], value=b["value"] / axis) for b in scene["bars"]]
    return [Element("word", tuple(b), word=w) for w, b in zip(scene["words"], scene["word_boxes"])]


def cell_targets(elements: Sequence[Element], rows: int, cols: int, image_size: int) -> dict[str, torch.Tensor]:
    """Per-cell targets (raster order, as the processor orders merged tokens) for one image.

    A cell holds the element whose box centre lies in it (the largest one if several do).
    Class targets are indices (0 = nothing) except `word`, which is the word's index in cells that
    hold a word and IGNORE elsewhere; `box` is x1, y1, x2, y2 / image_size and `value` a bar's
    value / axis maximum, NaN where they do not apply.
    """
    n = rows * cols
    cell_w, cell_h = image_size / cols, image_size / rows
    owner: list[Element | None] = [None] * n
    for el in sorted(elements, key=lambda e: (e.box[2] - e.box[0]) * (e.box[3] - e.box[1])):
        cx, cy = (el.box[0] + el.box[2]) / 2, (el.box[1] + el.box[3]) / 2
        r, c = min(rows - 1, int(cy // cell_h)), min(cols - 1, int(cx // cell_w))
        owner[r * cols + c] = el  # sorted by area, so the largest wins
    nan = float("nan")

    def index(values: Sequence[str], v: str | None) -> int:
        return 0 if v is None else 1 + values.index(v)

    return {
        "kind": torch.tensor([KINDS.index(e.kind) if e else 0 for e in owner]),
        "color": torch.tensor([index(COLORS, e.color) if e and e.color else (0 if e is None else IGNORE)
                               for e in owner]),
        "size": torch.tensor([index(SIZES, e.size) if e and e.size else (0 if e is None else IGNORE)
                              for e in owner]),
        "word": torch.tensor([OCR_WORDS.index(e.word) if e and e.word else IGNORE for e in owner]),
        "box": torch.tensor([[v / image_size for v in e.box] if e else [nan] * 4 for e in owner]),
        "value": torch.tensor([e.value if e and e.value is not None else nan for e in owner]),
    }


class SeeHeads(nn.Module):
    """Linear read-outs from a merged visual token to its cell targets."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.kind = nn.Linear(dim, len(KINDS))
        self.color = nn.Linear(dim, 1 + len(COLORS))
        self.size = nn.Linear(dim, 1 + len(SIZES))
        self.word = nn.Linear(dim, len(OCR_WORDS))
        self.box = nn.Linear(dim, 4)
        self.value = nn.Linear(dim, 1)

    def forward(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits or regressions for every token."""
        return {"kind": self.kind(tokens), "color": self.color(tokens), "size": self.size(tokens),
                "word": self.word(tokens), "box": self.box(tokens), "value": self.value(tokens).squeeze(-1)}


def see_loss(pred: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    """Sum of the class cross-entropies and the masked box/value L1 losses; also each part."""
    parts = {k: _cross_entropy(pred[k], target[k]) for k in ("kind", "color", "size", "word")}
    for k in ("box", "value"):
        mask = ~torch.isnan(target[k])
        # 10x: box coordinates are fractions of the image, so their L1 starts an order below the CEs.
        parts[k] = 10 * F.l1_loss(pred[k][mask], target[k][mask]) if mask.any() else pred[k].sum() * 0
    total = sum(parts.values())
    return total, {k: round(v.item(), 4) for k, v in parts.items()}


def _cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the cells whose target is not IGNORE; 0 (with a graph) when there are none."""
    if not (target != IGNORE).any():  # a batch without words: torch's mean over nothing would be NaN
        return logits.sum() * 0
    return F.cross_entropy(logits, target, ignore_index=IGNORE)


def family_weights(families: Sequence[str], ocr_share: float) -> list[float]:
    """Sampling weights of the vision stage: OCR at `ocr_share`, the other families sharing the rest evenly."""
    if "ocr" not in families or len(families) == 1:
        return [1.0] * len(families)
    rest = (1 - ocr_share) / (len(families) - 1)
    return [ocr_share if f == "ocr" else rest for f in families]


def targets_for(samples, grid_thw: torch.Tensor, merge: int) -> dict[str, torch.Tensor]:
    """Concatenated cell targets of a batch of samples, matching the merger's token order."""
    per = []
    for sample, (_, h, w) in zip(samples, grid_thw.tolist()):
        size = sample.record.extra["image_size"]
        per.append(cell_targets(scene_elements(sample.record.extra["scene"]), h // merge, w // merge, size))
    return {k: torch.cat([p[k] for p in per]) for k in per[0]}


def pretrain_vision(model, processor, steps: int, batch_size: int, lr: float, families: Sequence[str],
                    image_size: int, seed: int, first_index: int = 500_000, progress: bool = True,
                    weights: Sequence[float] | None = None) -> list[dict]:
    """Train `model`'s vision tower (in place) on dense cell targets, drawing each image's family by
    `weights` (even by default); returns a loss log every 25 steps."""
    from tqdm import tqdm

    from openvlthinker.tiny.shapeworld import generate, split_seed

    visual = model.model.visual
    lean = LeanVision.build(visual)
    if lean is None:
        raise ValueError(f"the vision stage needs a Qwen3-VL vision tower, not {type(visual).__name__}")
    merge = visual.config.spatial_merge_size
    torch.manual_seed(seed)
    heads = SeeHeads(visual.config.out_hidden_size)
    params = list(visual.parameters()) + list(heads.parameters())
    optim = torch.optim.AdamW(params, lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    rng = random.Random(seed)
    visual.train()
    log: list[dict] = []
    bar = tqdm(range(steps), desc="see (vision stage)", unit="step", disable=not progress)
    for step in bar:
        samples = []
        for j in range(batch_size):
            index = first_index + step * batch_size + j
            family = rng.choices(list(families), weights)[0]
            samples.append(generate(family, split_seed("train", index), image_size))
        enc = processor.image_processor([s.image for s in samples], return_tensors="pt")
        tokens, _ = lean.forward(enc["pixel_values"], enc["image_grid_thw"])
        pred, target = heads(tokens), targets_for(samples, enc["image_grid_thw"], merge)
        loss, parts = see_loss(pred, target)
        for group in optim.param_groups:  # short warm-up, then constant
            group["lr"] = lr * min(1.0, (step + 1) / 50)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optim.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if step % 25 == 0 or step == steps - 1:
            log.append({"step": step, "loss": round(loss.item(), 4), **parts, **_accuracies(pred, target)})
    visual.eval()
    return log


def _accuracies(pred: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, float]:
    """Word accuracy on cells that hold a word, and mean box error in pixels (at 128 px), for the log."""
    out = {}
    words = target["word"] != IGNORE
    if words.any():
        out["word_acc"] = round((pred["word"][words].argmax(-1) == target["word"][words]).float().mean().item(), 3)
    boxes = ~torch.isnan(target["box"][:, 0])
    if boxes.any():
        out["box_err_px"] = round(128 * (pred["box"][boxes] - target["box"][boxes]).abs().mean().item(), 2)
    return out
