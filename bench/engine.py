"""Benchmark: the transformers engine alone (no HTTP), one request at a time vs 16 at once.

Separates what continuous batching gives from what the gateway costs (bench/serve.py measures
both together). The same ShapeWorld image questions, greedy, thinking budget 256, run with the
lean step (lean_step.py: joining prompts and decoding rows in one forward, the vision tower on
the caller's side; the default) and with the model's own forward, side by side. The engine runs in
its own process, as it serves: in a thread, the encoding of 16 clients' prompts on the event loop
held the GIL the engine thread needed, and both paths measured that instead.

    .venv/bin/python bench/engine.py [--requests 96] [--max-tokens 64]
"""

from __future__ import annotations

import sys
from pathlib import Path

# Keep bench/ off the path: bench/serve.py would shadow the `serve` package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import asyncio
import time

from openvlthinker.models import DEFAULT_MODEL
from openvlthinker.tiny.shapeworld import FAMILIES, split
from serve.engines.base import GenerationRequest, GenerationResult, SamplingParams
from serve.engines.transformers.engine import TransformersEngine


def make_messages(n: int) -> list[list[dict]]:
    """n chat conversations: one ShapeWorld image and its question each, families interleaved."""
    samples = split("eval", (n + len(FAMILIES) - 1) // len(FAMILIES))[:n]
    return [[{"role": "user", "content": [{"type": "image", "image": s.image},
                                          {"type": "text", "text": s.record.problem.replace("<image>", "").strip()}]}]
            for s in samples]


async def run(engine: TransformersEngine, conversations: list[list[dict]], concurrency: int,
              max_tokens: int) -> tuple[float, int]:
    """Decode every conversation with at most `concurrency` in flight; (seconds, tokens)."""
    gate = asyncio.Semaphore(concurrency)
    tokens = 0

    async def one(i: int, messages: list[dict]) -> None:
        nonlocal tokens
        request = GenerationRequest(str(i), messages, SamplingParams(max_tokens=max_tokens, temperature=0.0),
                                    mode="think", thinking_budget=256)
        async with gate:
            async for item in engine.generate(request):
                if isinstance(item, GenerationResult):
                    tokens += len(item.completion_token_ids)

    start = time.perf_counter()
    await asyncio.gather(*(one(i, m) for i, m in enumerate(conversations)))
    return time.perf_counter() - start, tokens


async def main_async(args: argparse.Namespace) -> None:
    conversations = make_messages(args.requests)
    rows: dict[bool, list[tuple[int, float, int]]] = {}
    for lean in (True, False):  # the same requests with lean decoding steps, then with the model's forward
        engine = TransformersEngine(args.model, max_batch=16, max_queue=256, lean_decode=lean, process=True)
        await engine.start()
        try:
            await run(engine, conversations[:8], 4, args.max_tokens)  # warm-up
            rows[lean] = [(c, *(await run(engine, conversations, c, args.max_tokens))) for c in (1, 4, 16)]
        finally:
            await engine.stop()
    print(f"{args.requests} image requests, max_tokens={args.max_tokens}, greedy, engine alone (no HTTP) in its own "
          "process, 1 torch thread, max_batch 16; lean step (lean_step.py) vs the model's forward")
    print(f"{'in flight':<12}{'lean req/s':>11}{'tok/s':>8}{'vs one':>8}{'forward req/s':>15}{'tok/s':>8}{'vs one':>8}"
          f"{'lean/forward':>14}")
    one = {lean: args.requests / rows[lean][0][1] for lean in rows}
    for (c, t_lean, n_lean), (_, t_full, n_full) in zip(rows[True], rows[False]):
        lean_rps, full_rps = args.requests / t_lean, args.requests / t_full
        print(f"{c:<12}{lean_rps:>11.1f}{n_lean / t_lean:>8.0f}{lean_rps / one[True]:>7.2f}x"
              f"{full_rps:>15.1f}{n_full / t_full:>8.0f}{full_rps / one[False]:>7.2f}x{lean_rps / full_rps:>13.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--requests", type=int, default=96)
    parser.add_argument("--max-tokens", type=int, default=64)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
