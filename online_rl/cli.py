"""`openvlthinker rl`: run the online G²RPO loop against a server; `openvlthinker rl plot` draws its curves."""

from __future__ import annotations

import argparse
from pathlib import Path

from openvlthinker.models.placement import DTYPE_NAMES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Loop flags; each overrides the same RLConfig field from --config."""
    parser.add_argument("action", nargs="?", default="run", choices=["run", "plot"])
    parser.add_argument("--config", help="YAML file of RLConfig fields (flags override it)")
    parser.add_argument("--profile", default="auto", choices=["auto", "tiny", "none"],
                        help="defaults for the base model under the config file and flags (online_rl/profiles.py); "
                             "auto: the served model's own (tiny for the shipped model), none: RLConfig's")
    parser.add_argument("--endpoint")
    parser.add_argument("--api-key")
    parser.add_argument("--admin-key")
    parser.add_argument("--model", help="the base model folder the server serves (default: the server's own, "
                                        "from GET /v1/server)")
    parser.add_argument("--adapters-dir", help="the server's adapters folder as this machine sees it (default: the "
                                               "one the server reports)")
    parser.add_argument("--advantage", choices=["g2rpo", "grpo", "dr_grpo", "rloo"])
    parser.add_argument("--group-size", type=int)
    parser.add_argument("--prompts-per-round", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--gate-margin", type=float, help="net win share the gate resolves (default 0.2)")
    parser.add_argument("--gate-confidence", type=float, help="confidence of the gate's decisions (default 0.95)")
    parser.add_argument("--max-refills", type=int, help="more prompt batches to refill a round's dropped groups "
                                                        "(default 4)")
    parser.add_argument("--skip-tasks", help="comma-separated tasks not to train on (task_type or problem type, "
                                             "e.g. ocr); default: none")
    parser.add_argument("--rounds", type=int, default=1, help="rounds to run now; 0 = until stopped (default 1)")
    parser.add_argument("--every", type=float, default=0.0, help="start rounds at most every SECONDS")
    parser.add_argument("--min-new", type=int, default=0,
                        help="start a round once N users' prompts or ratings wait (default: at once)")
    parser.add_argument("--poll-s", type=float, default=5.0, help="with --min-new: seconds between looks (default 5)")
    parser.add_argument("--device", help="the trainer's torch device: auto (cuda if available, default), cpu, cuda, "
                                         "cuda:N")
    parser.add_argument("--dtype", choices=DTYPE_NAMES,
                        help="the base model's dtype in the trainer: auto (bfloat16 on CUDA, float32 on the CPU; "
                             "default), float32, bfloat16")
    parser.add_argument("--grad-checkpointing", action=argparse.BooleanOptionalAction, default=None,
                        help="recompute activations in the backward (default: on for CUDA, off on the CPU)")
    parser.add_argument("--trainer-procs", type=int,
                        help="train on N processes under torchrun, one device each (rank k on cuda:k, or the CPU): "
                             "the same update as one process, spread over them (default 1)")
    parser.add_argument("--data", help="OneThinker-format file of prompts (default: ShapeWorld train)")
    parser.add_argument("--image-root")
    parser.add_argument("--out", type=Path, default=Path("runs/rl"),
                        help="metrics, state and plots; the state belongs to one server and base model")


def _profile(name: str, cfg) -> dict:
    """The profile's values: by name, or for `auto` the one of the model the server serves."""
    from .profiles import PROFILES, profile_for

    if name != "auto":
        return dict(PROFILES[name])
    if cfg.model:
        return profile_for(cfg.model)
    from .client import GatewayClient
    from .server import read_server

    info = read_server(GatewayClient(cfg.endpoint, cfg.api_key, cfg.admin_key))
    return profile_for(info.get("model_path") or info["model"])


def run(args: argparse.Namespace) -> int:
    """Plot, or build the config (defaults < YAML < flags) and run the rounds."""
    from online_rl import loop

    if args.action == "plot":
        print(loop.plot(args.out))
        return 0
    import torch
    import yaml

    from .config import RLConfig

    values = yaml.safe_load(Path(args.config).read_text()) if args.config else {}
    if not isinstance(values, dict):
        raise ValueError(f"{args.config}: expected a mapping of RLConfig fields")
    for key in ("endpoint", "api_key", "admin_key", "model", "adapters_dir", "advantage", "group_size",
                "prompts_per_round", "lr", "gate_margin", "gate_confidence", "max_refills", "device", "dtype",
                "grad_checkpointing", "trainer_procs"):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    if args.skip_tasks is not None:
        values["skip_tasks"] = [t.strip() for t in args.skip_tasks.split(",") if t.strip()]
    if args.rounds < 0 or args.every < 0 or args.min_new < 0:
        raise ValueError("--rounds, --every and --min-new must be >= 0")
    if not args.poll_s > 0:
        raise ValueError(f"--poll-s must be > 0, got {args.poll_s}")
    cfg = RLConfig.from_mapping({**_profile(args.profile, RLConfig.from_mapping(values)), **values})
    if cfg.trainer_procs > 1:  # the loop again under torchrun, on rank 0 of cfg.trainer_procs processes
        from .distributed import launch

        return launch(cfg, args.rounds, args.out, data=args.data, image_root=args.image_root, every=args.every,
                      min_new=args.min_new, poll_s=args.poll_s)
    torch.set_num_threads(1)
    try:
        loop.run(cfg, args.rounds, args.out, data=args.data, image_root=args.image_root, every=args.every,
                 min_new=args.min_new, poll_s=args.poll_s)
    except KeyboardInterrupt:
        print("stopped; the next run resumes from", args.out / "state.json")
    return 0
