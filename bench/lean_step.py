"""Benchmark: the engine's forward pieces side by side in one process, interleaved, best of N.

- a running batch of 16 rows decoding one token while one ShapeWorld prompt joins: two forwards
  (a decoding step, then the prompt's prefill) against one forward carrying both (lean_step.py);
- a 16-row and a 1-row decoding step with q/k/v and gate/up fused into one product each (queries and
  keys then normed and rotated as one tensor), and not;
- the vision tower for one image: the model's module against the lean forward (lean_vision.py).

Each case runs `--calls` times per repetition, the repetitions interleave the cases (a shared
machine's speed drifts), and the best repetition is reported.

    .venv/bin/python bench/lean_step.py [--reps 15] [--calls 50]
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/serve.py is named like the `serve` package: keep this folder off the import path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import time

import torch

from openvlthinker.models import DEFAULT_MODEL, load
from openvlthinker.tiny.shapeworld import split
from serve.engines.inputs import collate, collect_images, encode_one, render
from serve.engines.transformers.kv_cache import KVBatch
from serve.engines.transformers.lean_step import Decoding, LeanStep, Prompts
from openvlthinker.models.lean_vision import LeanVision
from serve.engines.transformers.running_batch import prefill_positions


def timed(fn, calls: int) -> float:
    """Milliseconds per call of `fn` over `calls` calls (after one warm-up call)."""
    fn()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e3


def cases(model_path: str) -> dict[str, object]:
    """name -> a zero-argument call, for both the fused and the unfused step."""
    out: dict[str, object] = {}
    samples = split("eval", 4)[:17]
    for fuse in (True, False):
        model, processor = load(model_path)
        step = LeanStep.build(model, fuse=fuse)
        prompts = []
        for s in samples:
            messages = [{"role": "user", "content": [{"type": "image", "image": s.image},
                                                     {"type": "text", "text": s.record.problem.replace("<image>", "").strip()}]}]
            prompts.append(encode_one(processor, render(processor, messages), collect_images(messages)))
        with torch.inference_mode():
            running, _ = collate(prompts[:16], 0, "cpu", model.dtype)
            joining, _ = collate(prompts[16:], 0, "cpu", model.dtype)
            run_pos, join_pos = prefill_positions(model, running), prefill_positions(model, joining)
            run_vision, join_vision = step.encode_images(running), step.encode_images(joining)
            _, cache = step(None, Prompts(running, run_pos, run_vision), None)
            kv16 = KVBatch(cache, running["attention_mask"])
            _, cache = step(None, Prompts(joining, join_pos, join_vision), None)
            kv1 = KVBatch(cache, joining["attention_mask"])
        tokens = torch.zeros(16, dtype=torch.long)
        positions = run_pos[..., -1].amax(0) + 1

        def on(kv, fn):
            def call():  # a decoding step writes one column: open it, run, then take it back
                kv.grow()
                fn()
                kv.end -= 1
            return call

        tag = "fused" if fuse else "unfused"
        out[f"decode 16 rows, {tag}"] = on(kv16, lambda s=step, kv=kv16: s(Decoding(tokens, positions, kv), None, None))
        out[f"decode 1 row, {tag}"] = on(kv1, lambda s=step, kv=kv1: s(Decoding(tokens[:1], positions[:1], kv), None, None))
        if fuse:
            join = Prompts(joining, join_pos, None)

            def two_forwards(s=step, kv=kv16, join=join):
                s(Decoding(tokens, positions, kv), None, None)
                s(None, Prompts(join.enc, join.positions, s.encode_images(join.enc)), None)

            out["decode 16 + join 1: two forwards"] = on(kv16, two_forwards)
            out["decode 16 + join 1: one forward"] = on(kv16, lambda s=step, kv=kv16, join=join: s(
                Decoding(tokens, positions, kv), Prompts(join.enc, join.positions, s.encode_images(join.enc)), None))
            grid, pixels = joining["image_grid_thw"], joining["pixel_values"]
            lean = LeanVision.build(model.model.visual)
            out["vision 1 image: model module"] = lambda v=model.model.visual: v(pixels, grid_thw=grid, return_dict=True)
            out["vision 1 image: lean"] = lambda: lean(pixels, grid)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--calls", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(1)
    calls = cases(args.model)
    best = {name: float("inf") for name in calls}
    with torch.inference_mode():
        for _ in range(args.reps):
            for name, fn in calls.items():
                best[name] = min(best[name], timed(fn, args.calls))
    print(f"tiny model, 1 torch thread, best of {args.reps} interleaved repetitions x {args.calls} calls (ms per call)")
    pairs = [("decode 16 + join 1: two forwards", "decode 16 + join 1: one forward"),
             ("decode 16 rows, unfused", "decode 16 rows, fused"), ("decode 1 row, unfused", "decode 1 row, fused"),
             ("vision 1 image: model module", "vision 1 image: lean")]
    for a, b in pairs:
        print(f"{a:<36}{best[a]:>7.3f}   {b:<36}{best[b]:>7.3f}   {best[a] / best[b]:>5.2f}x")


if __name__ == "__main__":
    main()
