"""`openvlthinker eval`: run a model over ShapeWorld eval or a OneThinker file and tabulate per task."""

from __future__ import annotations

import argparse
from pathlib import Path

from openvlthinker.reasoning import EFFORTS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Model, data, decoding and output flags."""
    parser.add_argument("--model", default=None, help="model folder or hub id (default: the shipped tiny model)")
    parser.add_argument("--data", default="shapeworld:eval:50",
                        help="shapeworld:eval[:N per family] or a OneThinker .json/.jsonl file (default: %(default)s)")
    parser.add_argument("--image-root", default=None, help="folder the file's image paths are relative to")
    parser.add_argument("--reasoning-effort", default="auto", choices=EFFORTS)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=384)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N records")
    parser.add_argument("--shuffle-images", action="store_true",
                        help="pair every question with the next same-task question's images: the score of a model "
                             "that answers from the text alone (a chance baseline)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=Path("runs/eval/report.json"), help="JSON report path")


def run(args: argparse.Namespace) -> int:
    """Load, evaluate, print the table, write the JSON."""
    import torch

    from openvlthinker.evaluation import (
        evaluate, format_table, load_eval_data, shuffle_images, summarise, write_report,
    )
    from openvlthinker.models import DEFAULT_MODEL, load

    if args.batch_size < 1 or args.max_new_tokens < 1:
        raise ValueError("--batch-size and --max-new-tokens must be >= 1")
    torch.set_num_threads(args.threads)
    model_path = args.model or DEFAULT_MODEL
    data = load_eval_data(args.data, args.image_root)
    if args.limit is not None:
        data = data[: args.limit]
    if args.shuffle_images:
        data = shuffle_images(data)
    model, processor = load(model_path, device=args.device)
    items = evaluate(
        model, processor, data, effort=args.reasoning_effort, batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
    )
    print(format_table(summarise(items)))
    path = write_report(args.out, items, model=str(model_path), data=args.data, reasoning_effort=args.reasoning_effort,
                        temperature=args.temperature, shuffle_images=args.shuffle_images)
    print(f"report: {path}")
    return 0
