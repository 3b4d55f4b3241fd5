"""`openvlthinker train-tiny`: train the embedded tiny checkpoint from scratch on ShapeWorld."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

from openvlthinker.tiny.train import TrainConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags mirror TrainConfig; defaults reproduce the shipped checkpoint."""
    defaults = TrainConfig()
    parser.add_argument("--out", type=Path, default=defaults.out_dir, help="output model folder (default: the shipped one)")
    for f in fields(TrainConfig):
        if f.name in ("out_dir", "families"):
            continue
        value = getattr(defaults, f.name)
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=type(value), default=value, help=f"(default: {value})")
    parser.add_argument("--plot", type=Path, default=Path("runs/train-tiny/loss.png"), help="loss curve PNG")


def run(args: argparse.Namespace) -> int:
    """Train, save, plot."""
    from openvlthinker.tiny.train import plot_history, train

    values = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if f.name not in ("out_dir", "families")}
    log = train(TrainConfig(out_dir=args.out, **values))
    png = plot_history(log, args.plot)
    print(f"saved {args.out} in {log['wall_time_s']:.0f} s; final smoothed loss "
          f"{log['history'][-1]['smoothed']:.3f}; loss curve {png}")
    return 0
