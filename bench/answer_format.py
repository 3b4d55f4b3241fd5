"""Benchmark: accuracy of bare questions with the plain instruction, the inferred tail, and the true type.

The gateway ends every question's instruction with a tail per problem type ("Answer with the
option letter only.", ...). A client that sends no `metadata.problem_type` used to get the
plain instruction; now `openvlthinker.question_type.infer_problem_type` reads the type from the
question. This sends the same ShapeWorld eval questions three ways through the transformers
engine (greedy, reasoning_effort auto) and grades each against its record, in one run.

    .venv/bin/python bench/answer_format.py [--per-family 30]
"""

from __future__ import annotations

import sys
from pathlib import Path

# Keep bench/ off the path: bench/serve.py would shadow the `serve` package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import asyncio
from collections import defaultdict

from openvlthinker.models import DEFAULT_MODEL
from openvlthinker.prompts import to_messages
from openvlthinker.question_type import infer_problem_type
from openvlthinker.reasoning import plan
from openvlthinker.rewards import grade
from openvlthinker.tiny.shapeworld import FAMILIES, split
from serve.engines.base import GenerationRequest, GenerationResult, SamplingParams
from serve.engines.transformers.engine import TransformersEngine

PROMPTS = {"plain instruction": lambda record: None,
           "inferred tail": lambda record: infer_problem_type(record.problem),
           "true type": lambda record: record.problem_type}


async def accuracy(engine: TransformersEngine, samples, problem_type_of) -> dict[str, float]:
    """Mean accuracy per task family (and "all") with the instruction tail `problem_type_of(record)` picks."""
    async def one(sample) -> float:
        record = sample.record
        p = plan("auto", record.problem, problem_type_of(record), None)
        messages = to_messages(record.problem, [sample.image], problem_type=problem_type_of(record),
                               options=record.options, mode=p.mode)
        request = GenerationRequest("bench", messages, SamplingParams(max_tokens=256, temperature=0.0), mode=p.mode,
                                    thinking_budget=p.budget)
        async for item in engine.generate(request):
            if isinstance(item, GenerationResult):
                return grade(record, item.text, require_thinking=p.mode == "think").accuracy
        raise RuntimeError("the engine ended without a result")

    scores = await asyncio.gather(*(one(s) for s in samples))
    by_task: dict[str, list[float]] = defaultdict(list)
    for sample, score in zip(samples, scores):
        by_task[sample.record.task].append(score)
    out = {task: sum(v) / len(v) for task, v in by_task.items()}
    out["all"] = sum(scores) / len(scores)
    return out


async def main_async(args: argparse.Namespace) -> None:
    samples = split("eval", args.per_family)
    matched = sum(infer_problem_type(s.record.problem) == s.record.problem_type for s in samples)
    engine = TransformersEngine(args.model, max_batch=16, max_queue=len(samples) + 1)
    await engine.start()
    try:
        rows = {name: await accuracy(engine, samples, pick) for name, pick in PROMPTS.items()}
    finally:
        await engine.stop()
    print(f"{len(samples)} ShapeWorld eval questions ({args.per_family} per family), tiny model, greedy, effort auto; "
          f"inferred type = true type for {matched}/{len(samples)}")
    columns = [*FAMILIES, "all"]
    print(f"{'prompt':<20}" + "".join(f"{c[:12]:>14}" for c in columns))
    for name, row in rows.items():
        print(f"{name:<20}" + "".join(f"{row[c]:>14.3f}" for c in columns))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--per-family", type=int, default=30)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
