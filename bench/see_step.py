"""Benchmark: one vision-stage step's forward and backward, the tower's module against the lean forward.

`openvlthinker.tiny.see` trains the vision tower on dense cell targets. This times the same
batch (32 ShapeWorld train images, half of them OCR, as the stage draws them) through the
module's forward and through `LeanVision.forward`, each followed by the heads, the loss and the
backward, alternating the two, on the recipe's two torch threads; medians are printed side by side.

    .venv/bin/python bench/see_step.py [--reps 20] [--batch 32] [--threads 2]
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/serve.py is named like the `serve` package: keep this folder off the import path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import statistics
import time

import torch

from openvlthinker.models.lean_vision import LeanVision
from openvlthinker.tiny.see import SeeHeads, see_loss, targets_for
from openvlthinker.tiny.shapeworld import FAMILIES, generate, split_seed
from openvlthinker.tiny.train import TrainConfig, build_untrained


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=TrainConfig.threads)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, _, processor = build_untrained(TrainConfig())
    visual = model.model.visual
    lean = LeanVision.build(visual)
    heads = SeeHeads(visual.config.out_hidden_size)
    others = [f for f in FAMILIES if f != "ocr"]
    samples = [generate("ocr" if i % 2 else others[i // 2 % len(others)], split_seed("train", 500_000 + i))
               for i in range(args.batch)]
    enc = processor.image_processor([s.image for s in samples], return_tensors="pt")
    pixels, grid = enc["pixel_values"], enc["image_grid_thw"]
    target = targets_for(samples, grid, visual.config.spatial_merge_size)
    forwards = {"module": lambda: visual(pixels, grid_thw=grid).pooler_output,
                "lean": lambda: lean.forward(pixels, grid)[0]}

    def step(name: str) -> float:
        start = time.perf_counter()
        loss, _ = see_loss(heads(forwards[name]()), target)
        loss.backward()
        elapsed = time.perf_counter() - start
        visual.zero_grad(set_to_none=True)
        heads.zero_grad(set_to_none=True)
        return elapsed

    times: dict[str, list[float]] = {name: [] for name in forwards}
    for name in forwards:  # warm-up
        step(name)
    for _ in range(args.reps):
        for name in forwards:
            times[name].append(step(name))
    med = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    print(f"vision stage, {args.batch} images (half OCR), forward + heads + loss + backward, {args.threads} torch "
          f"threads, median of {args.reps} alternating (ms)")
    print(f"module {med['module']:.1f}   lean {med['lean']:.1f}   {med['module'] / med['lean']:.2f}x")


if __name__ == "__main__":
    main()
