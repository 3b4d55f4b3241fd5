"""`openvlthinker demo`: the Gradio chat in front of a running gateway (which it reaches over HTTP only)."""

from __future__ import annotations

import argparse
import os
import tempfile


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Which gateway to talk to, and where to serve the page."""
    parser.add_argument("--endpoint", default="http://127.0.0.1:8000", help="the gateway's URL (with or without /v1)")
    parser.add_argument("--api-key", default="none", help="the gateway's API key (any string if it has none)")
    parser.add_argument("--admin-key", default=None, help="optional: shows which version is promoted")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--rl-metrics", default=None, help="the RL loop's metrics.jsonl, for rewards per version")
    parser.add_argument("--refresh-s", type=float, default=15.0, help="how often the versions panel refreshes")


def run(args: argparse.Namespace) -> int:
    """Build the app and serve it until Ctrl-C."""
    # Before gradio is imported: no usage reporting from an offline demo.
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from .app import build_app
    from .examples import write_examples
    from .gateway import Gateway

    gateway = Gateway(args.endpoint, args.api_key, args.admin_key)
    examples_dir = tempfile.mkdtemp(prefix="openvlthinker-demo-")
    app = build_app(gateway, write_examples(examples_dir), args.rl_metrics, args.refresh_s)
    print(f"demo for {gateway.endpoint}: http://{args.host}:{args.port}", flush=True)
    app.queue(default_concurrency_limit=16).launch(
        server_name=args.host, server_port=args.port, share=False, allowed_paths=[examples_dir],
        show_error=False, quiet=True)
    return 0
