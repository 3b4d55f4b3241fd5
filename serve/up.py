"""`openvlthinker up`: the main job in one command — the gateway plus the online RL loop beside it.

The gateway runs as a child process; the RL loop runs as another (`openvlthinker rl`), a
client of the gateway over HTTP like any other, training a round whenever enough new graded
interactions or ratings have arrived. Ctrl-C stops both. Logs go to the run folder.
"""

from __future__ import annotations

import argparse
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Where to serve, what model, and how eagerly the loop trains."""
    parser.add_argument("--model", default=None, help="model folder or hub id (default: the shipped tiny model)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--run-dir", type=Path, default=Path("runs/up"), help="store, adapters, logs, RL metrics")
    parser.add_argument("--admin-key", default=None, help="default: a random key saved to RUN_DIR/admin.key")
    parser.add_argument("--no-rl", action="store_true", help="serve only, no online learning")
    parser.add_argument("--rl-min-new", type=int, default=8, help="train once N new graded interactions or ratings arrive")


def run(args: argparse.Namespace) -> int:
    """Start the gateway, then the loop; wait; stop both on Ctrl-C."""
    from openvlthinker.models import DEFAULT_MODEL

    from .launcher import ServerProcess

    run_dir: Path = args.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    key_file = run_dir / "admin.key"
    admin_key = args.admin_key or (key_file.read_text().strip() if key_file.is_file() else secrets.token_hex(16))
    key_file.write_text(admin_key)
    model = args.model or DEFAULT_MODEL
    adapters = run_dir / "adapters"
    print(f"starting the gateway on {args.host}:{args.port} (log: {run_dir / 'serve.log'}) ...", flush=True)
    server = ServerProcess(["--model", model, "--run-dir", str(run_dir / "serve"), "--adapters-dir", str(adapters),
                            "--admin-key", admin_key], host=args.host, port=args.port, log_path=run_dir / "serve.log")
    loop = None
    if not args.no_rl:
        rl_log = open(run_dir / "rl.log", "ab")
        loop = subprocess.Popen(
            [sys.executable, "-m", "openvlthinker.cli", "rl", "--endpoint", server.url, "--admin-key", admin_key,
             "--model", model, "--adapters-dir", str(adapters), "--rounds", "0", "--min-new", str(args.rl_min_new),
             "--group-size", "4", "--prompts-per-round", "8", "--out", str(run_dir / "rl")],
            stdout=rl_log, stderr=subprocess.STDOUT)
    print(f"\nOpenAI-compatible API:  {server.url}/v1   (api key: any string)\n"
          f"admin key:              {admin_key}   (saved in {key_file})\n"
          f"online RL loop:         {'off' if loop is None else f'trains after {args.rl_min_new} new graded interactions or ratings (log: ' + str(run_dir / 'rl.log') + ')'}\n"
          f"Ctrl-C stops everything.\n", flush=True)
    try:
        while server.proc.poll() is None:
            if loop is not None and loop.poll() is not None:
                print(f"the RL loop exited with {loop.returncode}; see {run_dir / 'rl.log'}. Still serving.", flush=True)
                loop = None
            time.sleep(1.0)
        print(f"the gateway exited with {server.proc.returncode}:\n{server.output(2000)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        if loop is not None and loop.poll() is None:
            loop.send_signal(signal.SIGINT)
            try:
                loop.wait(30)
            except subprocess.TimeoutExpired:
                loop.kill()
        server.stop()
