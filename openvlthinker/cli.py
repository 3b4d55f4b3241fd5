"""The `openvlthinker` console script: one command, one module per subcommand.

Each subcommand module exposes `add_arguments(parser)` and `run(args) -> int | None` and
imports its heavy libraries inside `run`, so `openvlthinker --help` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

# name -> (module, one-line help). Later components register here.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "eval": ("openvlthinker.commands.evaluate", "evaluate a model on ShapeWorld or a OneThinker file, per task"),
    "up": ("serve.up", "the main job: serve the model with the online RL loop and the demo (Ctrl-C stops all three)"),
    "rl": ("online_rl.cli", "improve the served model online with G²RPO LoRA rounds (or: rl plot)"),
    "train-tiny": ("openvlthinker.commands.train_tiny", "train the embedded tiny model from scratch on ShapeWorld"),
    "serve": ("serve.cli", "serve the model behind an OpenAI-compatible API (chat, images, feedback, adapters)"),
    "demo": ("demo.cli", "a Gradio chat with images, thinking and feedback, in front of a running gateway"),
}


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every registered subcommand."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="openvlthinker",
        description="Serve OpenVLThinkerV2 behind an OpenAI-compatible API and improve it online with G²RPO.",
    )
    parser.add_argument("--version", action="version", version=f"openvlthinker {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        sp = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(sp)
        sp.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments and run the chosen subcommand; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_module", None) is None:
        parser.print_help()
        return 0
    try:
        return int(args._module.run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except (ValueError, FileNotFoundError) as exc:  # bad input from the user: a message, not a trace
        print(f"openvlthinker {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
