"""Evaluate a model on ShapeWorld eval or any OneThinker-format file: grade, tabulate, save.

Each query gets the reasoning plan of its `reasoning_effort` (auto by default), is decoded
in batches with the hard thinking budget, and is graded by the composite reward. The report
has one row per task family: accuracy, format rate, reward, mean thinking and answer tokens.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from .data import TaskRecord, load_records, open_image
from .prompts import record_messages
from .reasoning import check_effort, plan
from .rewards import grade

SHAPEWORLD_PREFIX = "shapeworld:"


@dataclass(frozen=True)
class EvalItem:
    """One graded query."""

    problem_id: str
    task: str
    mode: str
    accuracy: float
    format: float
    reward: float
    thinking_tokens: int
    answer_tokens: int
    response: str


def load_eval_data(spec: str, image_root: str | None = None) -> list[tuple[TaskRecord, list[Any]]]:
    """`shapeworld:eval[:N]` (N per family, default 50) or a JSON/JSONL file -> (record, images)."""
    if spec.startswith(SHAPEWORLD_PREFIX):
        from .tiny.shapeworld import split

        parts = spec[len(SHAPEWORLD_PREFIX):].split(":")
        name = parts[0] or "eval"
        try:
            n = int(parts[1]) if len(parts) > 1 else 50
        except ValueError:
            raise ValueError(f"bad data spec {spec!r}: expected shapeworld:eval[:N] with N an integer") from None
        if n < 1:
            raise ValueError(f"bad data spec {spec!r}: N must be >= 1")
        return [(s.record, [s.image]) for s in split(name, n)]
    records = load_records(spec, image_root)
    return [(r, [open_image(p) for p in r.images]) for r in records]


def shuffle_images(data: Sequence[tuple[TaskRecord, list[Any]]]) -> list[tuple[TaskRecord, list[Any]]]:
    """Give each record the images of the next record of the same task (cyclically), keeping the questions.

    Graded against the unchanged answers, this scores what a model gets from the text alone.
    """
    by_task: dict[str, list[int]] = {}
    for i, (record, _) in enumerate(data):
        by_task.setdefault(record.task, []).append(i)
    out = list(data)
    for indices in by_task.values():
        for i, j in zip(indices, indices[1:] + indices[:1]):
            out[i] = (data[i][0], data[j][1])
    return out


def summarise(items: Sequence[EvalItem]) -> dict[str, dict[str, float]]:
    """Per-task means (and an `all` row) of accuracy, format, reward and token counts."""
    groups: dict[str, list[EvalItem]] = {}
    for it in items:
        groups.setdefault(it.task, []).append(it)
    if items:
        groups["all"] = list(items)

    def row(xs: list[EvalItem]) -> dict[str, float]:
        n = len(xs)
        return {
            "n": n,
            "accuracy": sum(x.accuracy for x in xs) / n,
            "format_rate": sum(x.format for x in xs) / n,
            "reward": sum(x.reward for x in xs) / n,
            "thinking_tokens": sum(x.thinking_tokens for x in xs) / n,
            "answer_tokens": sum(x.answer_tokens for x in xs) / n,
        }

    return {task: row(xs) for task, xs in groups.items()}


def format_table(summary: dict[str, dict[str, float]]) -> str:
    """A fixed-width text table of `summarise` output (markdown-compatible)."""
    head = "| task | n | accuracy | format | reward | thinking tok | answer tok |"
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|"]
    for task, r in summary.items():
        lines.append(
            f"| {task} | {r['n']} | {r['accuracy']:.3f} | {r['format_rate']:.3f} | {r['reward']:.3f} "
            f"| {r['thinking_tokens']:.1f} | {r['answer_tokens']:.1f} |"
        )
    return "\n".join(lines)


def evaluate(
    model, processor, data: Sequence[tuple[TaskRecord, list[Any]]], *, effort: str = "auto",
    batch_size: int = 16, max_new_tokens: int = 512, temperature: float = 0.0, top_p: float = 1.0,
    seed: int = 0, progress: bool = True,
) -> list[EvalItem]:
    """Generate and grade every query; returns one EvalItem per record, in order."""
    from tqdm import tqdm

    from .generation import generate_batch

    check_effort(effort)
    items: list[EvalItem] = []
    bar = tqdm(total=len(data), desc="eval", unit="q", disable=not progress)
    for start in range(0, len(data), batch_size):
        chunk = data[start : start + batch_size]
        plans = [plan(effort, r.problem, r.problem_type, r.task_type) for r, _ in chunk]
        convs = [(record_messages(r, images=imgs, mode=p.mode), imgs) for (r, imgs), p in zip(chunk, plans)]
        gens = generate_batch(
            model, processor, convs, budgets=[p.budget or None for p in plans], max_new_tokens=max_new_tokens,
            temperature=temperature, top_p=top_p, seed=seed + start,
        )
        for (record, _), p, g in zip(chunk, plans, gens):
            score = grade(record, g.text, require_thinking=p.mode == "think")
            items.append(EvalItem(
                problem_id=record.problem_id, task=record.task, mode=p.mode, accuracy=score.accuracy,
                format=score.format, reward=score.overall, thinking_tokens=g.thinking_tokens,
                answer_tokens=g.answer_tokens, response=g.text,
            ))
        bar.update(len(chunk))
    bar.close()
    return items


def write_report(path: str | Path, items: Sequence[EvalItem], **meta: Any) -> Path:
    """Write the summary and every item as JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    report = {**meta, "summary": summarise(items), "items": [asdict(it) for it in items]}
    path.write_text(json.dumps(report, indent=1))
    return path
