"""Benchmark: a model's ShapeWorld accuracy per question kind, real vs shuffled images.

`openvlthinker eval` reports one accuracy per family; a family mixes kinds of questions with
different answer priors (general VQA: colour, shape and size; math: "remove", "plus", "how many
more"; spatial reasoning: relations, nearest shape, width and distance ratios; charts: a bar's
value, the largest bar). Per kind, this prints the accuracy with the question's own image, with the next
question's image (`--shuffle-images`: what the text alone earns), and the answers given most
often, which shows a model answering from a prior (always "B", always "1").

    .venv/bin/python bench/shapeworld_kinds.py [--model PATH] [--per-family 150]
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/serve.py is named like the `serve` package: keep this folder off the import path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import collections

FAMILIES = ("spatial_reasoning", "general_vqa", "math_reasoning", "chart")  # the families with kinds


def kind(record) -> str:
    """The question's kind as the generator recorded it: a relation, an attribute, an operation, a chart query."""
    query = record.extra["scene"].get("query", {})
    return f"{record.task} {query.get('kind') or query.get('op')}"


def answer_of(response: str) -> str:
    """The text inside the response's last <answer> tag (what the grader compares)."""
    from openvlthinker.rewards import extract_answer

    return (extract_answer(response) or "").strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model folder (default: the shipped tiny model)")
    parser.add_argument("--per-family", type=int, default=150, help="eval questions per family")
    args = parser.parse_args()

    import torch

    from openvlthinker.evaluation import evaluate, shuffle_images
    from openvlthinker.models import DEFAULT_MODEL, load
    from openvlthinker.tiny.shapeworld import split

    torch.set_num_threads(1)
    samples = [s for s in split("eval", args.per_family) if s.record.task in FAMILIES]
    data = [(s.record, [s.image]) for s in samples]
    model, processor = load(args.model or DEFAULT_MODEL)
    real = evaluate(model, processor, data)
    shuffled = evaluate(model, processor, shuffle_images(data))
    groups: dict[str, list] = collections.defaultdict(list)
    for (record, _), a, b in zip(data, real, shuffled):
        groups[kind(record)].append((a.accuracy, b.accuracy, record.answer, answer_of(a.response)))
    print(f"model {args.model or DEFAULT_MODEL}, ShapeWorld eval, {args.per_family} per family, greedy, effort auto")
    print(f"{'kind':<34}{'n':>5}{'real':>7}{'shuffled':>10}   gold answers (top 3)        answers given (top 3)")
    for name, rows in sorted(groups.items()):
        n = len(rows)
        gold = collections.Counter(r[2] for r in rows).most_common(3)
        given = collections.Counter(r[3] for r in rows).most_common(3)
        top = lambda c: ", ".join(f"{k} {v}" for k, v in c)  # noqa: E731
        print(f"{name:<34}{n:>5}{sum(r[0] for r in rows) / n:>7.2f}{sum(r[1] for r in rows) / n:>10.2f}   "
              f"{top(gold):<28}{top(given)}")


if __name__ == "__main__":
    main()
