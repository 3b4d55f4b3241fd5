"""`openvlthinker up`: the main job in one command — the gateway, the online RL loop and the demo.

The gateway runs as a child process, on the embedded transformers engine or, with --engine vllm,
on vLLM (the gateway's own child); the RL loop runs as another (`openvlthinker rl`), a
client of the gateway over HTTP like any other, training a round whenever enough new graded
interactions or ratings have arrived; the Gradio demo (`openvlthinker demo`) is a third, also
an HTTP client, whose feedback buttons feed that loop. A loop or demo that crashes is started
again (the loop resumes from its state); Ctrl-C stops all three. Logs go to the run folder.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Where to serve, what model, and how eagerly the loop trains."""
    parser.add_argument("--model", default=None, help="model folder or hub id (default: the shipped tiny model)")
    parser.add_argument("--engine", default="transformers", choices=["transformers", "vllm"],
                        help="the gateway's engine (default transformers); vllm: vLLM serves the model and the "
                             "loop's adapters")
    parser.add_argument("--vllm-python", default=None,
                        help="with --engine vllm: the python of an environment with vLLM (default: this one)")
    parser.add_argument("--serve-arg", dest="serve_args", action="append", default=[], metavar="ARGS",
                        help="extra `openvlthinker serve` flags, repeatable, passed last (e.g. "
                             "--serve-arg='--max-model-len 2048')")
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface of the gateway and the demo (default 127.0.0.1). A non-loopback one needs an "
                             "API key: --api-key, else a random one saved to RUN_DIR/api.key (mode 0600)")
    parser.add_argument("--api-key", default=None, help="the gateway's API key (default: none on a loopback --host)")
    parser.add_argument("--insecure-no-auth", action="store_true",
                        help="on a non-loopback --host, serve the API without a key anyway")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--run-dir", type=Path, default=Path("runs/up"), help="store, adapters, logs, RL metrics")
    parser.add_argument("--admin-key", default=None, help="default: a random key saved to RUN_DIR/admin.key")
    parser.add_argument("--no-rl", action="store_true", help="serve only, no online learning")
    parser.add_argument("--rl-min-new", type=int, default=8, help="train once N new graded interactions or ratings arrive")
    parser.add_argument("--rl-arg", dest="rl_args", action="append", default=[], metavar="ARGS",
                        help="extra `openvlthinker rl` flags, repeatable, passed last (e.g. --rl-arg='--lr 1e-4' or "
                             "--rl-arg='--trainer-procs 2'); not the ones `up` sets itself")
    parser.add_argument("--no-demo", action="store_true", help="no Gradio demo, only the API (and the loop)")
    parser.add_argument("--demo-port", type=int, default=7860, help="the demo's port (on --host)")


class Keys:
    """The keys `up` hands out: the admin key, the clients' API key, and the demo's own key.

    On a loopback --host there is no API key unless one is given (one machine's users), and everyone's
    feedback trains. On any other --host the API needs a key, and only the demo's feedback trains: the
    demo gets a key of its own, new at every start, that the gateway trusts."""

    def __init__(self, args: argparse.Namespace, run_dir: Path):
        from .keys import is_loopback_host, load_or_create_key, save_key

        self.admin_file, self.api_file = run_dir / "admin.key", run_dir / "api.key"
        self.admin = args.admin_key or load_or_create_key(self.admin_file)[0]
        save_key(self.admin_file, self.admin)  # 0600 also for a file an older `up` wrote
        exposed = not is_loopback_host(args.host)
        self.api, self.api_saved = args.api_key or None, False
        if self.api is None and exposed and not args.insecure_no_auth:
            self.api, _ = load_or_create_key(self.api_file)
            self.api_saved = True
        self.demo = secrets.token_urlsafe(24) if exposed else None
        if self.admin in (self.api, self.demo):
            raise ValueError("--admin-key must differ from --api-key (otherwise every client is an admin)")

    def serve_args(self) -> list[str]:
        """The gateway's key flags."""
        # KEY=VALUE: a random key may start with "-", which argparse would take for a flag
        return ([f"--admin-key={self.admin}"] + ([f"--api-key={self.api}"] if self.api else [])
                + ([f"--trusted-feedback-keys={self.demo}"] if self.demo else [])
                + (["--insecure-no-auth"] if self.api is None and self.demo else []))

    def describe_api(self) -> str:
        """How clients authenticate, for the banner."""
        if self.api is None:
            return "(api key: any string)" if self.demo is None else "(no api key: --insecure-no-auth)"
        where = f", saved in {self.api_file}" if self.api_saved else ""
        trust = "; only the demo's feedback trains" if self.demo else ""
        return f"(api key: {self.api}{where}{trust})"


def engine_args(args: argparse.Namespace) -> list[str]:
    """The gateway's engine flags and the extra `serve` flags (--serve-arg, each split as a shell would)."""
    out = ["--engine", args.engine]
    if args.vllm_python:
        if args.engine != "vllm":
            raise ValueError("--vllm-python needs --engine vllm")
        out += ["--vllm-python", args.vllm_python]
    return out + [arg for extra in args.serve_args for arg in shlex.split(extra)]


def _start_demo(args: argparse.Namespace, api_url: str, keys: Keys, run_dir: Path) -> subprocess.Popen:
    """`openvlthinker demo` against the gateway, logging to RUN_DIR/demo.log."""
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}
    demo_key = keys.demo or keys.api
    with open(run_dir / "demo.log", "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "openvlthinker.cli", "demo", "--endpoint", api_url, f"--admin-key={keys.admin}",
             *([f"--api-key={demo_key}"] if demo_key else []),
             "--host", args.host, "--port", str(args.demo_port), "--rl-metrics", str(run_dir / "rl" / "metrics.jsonl")],
            stdout=log, stderr=subprocess.STDOUT, env=env)


# The loop flags `up` sets itself: it owns the server, its folders and when rounds start.
_UP_LOOP_FLAGS = ("--endpoint", "--api-key", "--admin-key", "--model", "--adapters-dir", "--rounds", "--min-new", "--out")


class _Refusing(argparse.ArgumentParser):
    def error(self, message: str):  # a ValueError for `up` to report, not this parser's exit
        raise ValueError(message)


def loop_args(args: argparse.Namespace) -> list[str]:
    """The extra `openvlthinker rl` flags (--rl-arg, each split as a shell would), checked as the loop parses them."""
    from online_rl.cli import add_arguments as add_loop_arguments

    extra = [arg for chunk in args.rl_args for arg in shlex.split(chunk)]
    owned = sorted({a.split("=", 1)[0] for a in extra if a.split("=", 1)[0] in _UP_LOOP_FLAGS})
    if owned:
        raise ValueError(f"--rl-arg: {', '.join(owned)} {'is' if len(owned) == 1 else 'are'} set by `up` itself "
                         "(use up's --rl-min-new, --run-dir, --model, --api-key, --admin-key)")
    parser = _Refusing(prog="openvlthinker rl", add_help=False)
    add_loop_arguments(parser)
    try:
        parsed = parser.parse_args(extra)
    except ValueError as exc:
        raise ValueError(f"--rl-arg: {exc}") from None
    if parsed.action != "run":
        raise ValueError(f"--rl-arg: `up` runs the loop; `openvlthinker rl {parsed.action}` is a command of its own")
    return extra


def _start_loop(args: argparse.Namespace, api_url: str, keys: Keys, model: str, run_dir: Path) -> subprocess.Popen:
    """`openvlthinker rl` for as long as `up` runs, logging to RUN_DIR/rl.log (it resumes from RUN_DIR/rl).

    Its settings are the model's loop profile (online_rl/profiles.py: the tiny one for the shipped model).
    """
    with open(run_dir / "rl.log", "ab") as log:  # the child holds its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "openvlthinker.cli", "rl", "--endpoint", api_url, f"--admin-key={keys.admin}",
             *([f"--api-key={keys.api}"] if keys.api else []),
             "--model", model, "--adapters-dir", str(run_dir / "adapters"), "--rounds", "0",
             "--min-new", str(args.rl_min_new), "--out", str(run_dir / "rl"), *loop_args(args)],
            stdout=log, stderr=subprocess.STDOUT)


class Restarts:
    """When to start a crashed child again: after 5 s, then twice as long per crash in a row, at most 5 min; a
    child that ran for 10 minutes starts the count afresh."""

    def __init__(self, first: float = 5.0, cap: float = 300.0, healthy_after: float = 600.0):
        self.first, self.cap, self.healthy_after = first, cap, healthy_after
        self.crashes, self.due, self.started = 0, None, time.monotonic()

    def started_now(self) -> None:
        """The child was (re)started just now."""
        self.due, self.started = None, time.monotonic()

    def crashed(self) -> float:
        """Record a crash; the seconds until the restart."""
        now = time.monotonic()
        self.crashes = 1 if now - self.started >= self.healthy_after else self.crashes + 1
        wait = min(self.cap, self.first * 2 ** (self.crashes - 1))
        self.due = now + wait
        return wait

    def ready(self) -> bool:
        """A restart is due."""
        return self.due is not None and time.monotonic() >= self.due


class Supervised:
    """A child `up` starts again, on the `Restarts` schedule, when it exits on its own."""

    def __init__(self, name: str, start: Callable[[], subprocess.Popen], log: Path):
        self.name, self.start, self.log = name, start, log
        self.restarts = Restarts()
        self.proc: subprocess.Popen | None = start()

    def tend(self) -> None:
        """Notice an exit (and say when the restart comes); restart once it is due."""
        if self.proc is not None and self.proc.poll() is not None:
            wait = self.restarts.crashed()
            print(f"the {self.name} exited with {self.proc.returncode} (see {self.log}); restarting it in "
                  f"{wait:.0f} s. Still serving.", flush=True)
            self.proc = None
        if self.proc is None and self.restarts.ready():
            self.proc = self.start()
            self.restarts.started_now()


def _interrupt(signum: int, frame) -> None:
    raise KeyboardInterrupt


def _stop(children: list[subprocess.Popen | None], server) -> None:
    """Ctrl-C each child in turn and wait for it (demo, loop, then the gateway); a second Ctrl-C or
    SIGTERM meanwhile kills them all at once instead of interrupting this cleanup halfway."""
    procs = [c for c in children if c is not None] + [server.proc]

    def hurry(signum: int, frame) -> None:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()

    # A KeyboardInterrupt raised in here would skip the rest and orphan whatever was not yet stopped.
    signal.signal(signal.SIGINT, hurry)
    signal.signal(signal.SIGTERM, hurry)
    for child, grace in zip(children, (10, 30)):
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGINT)
            try:
                child.wait(grace)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
    server.stop()


def run(args: argparse.Namespace) -> int:
    """Start the gateway, then the loop and the demo; wait; stop all three on Ctrl-C."""
    # A SIGTERM (kill, a service manager) stops everything as Ctrl-C does: without this, Python's default
    # action would end this process without its cleanup and leave the gateway, loop and demo running.
    signal.signal(signal.SIGTERM, _interrupt)
    # Started in the background by a non-interactive shell, a process inherits SIGINT ignored, and Python
    # then leaves it ignored: Ctrl-C would do nothing, and the children (which inherit it too) would not stop
    # on the SIGINT `_stop` sends them. A handler of our own is reset to the default in each child.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from openvlthinker.models import DEFAULT_MODEL

    from .launcher import ServerProcess, ensure_port_free, wait_for_url

    serve_flags = engine_args(args)  # a bad flag combination is refused before anything starts
    loop_args(args)
    ensure_port_free(args.host, args.port)
    if not args.no_demo:
        ensure_port_free(args.host, args.demo_port, "--demo-port")
    run_dir: Path = args.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    keys = Keys(args, run_dir)
    model = args.model or DEFAULT_MODEL
    adapters = run_dir / "adapters"  # the loop's _start_loop uses the same folder
    print(f"starting the gateway ({args.engine} engine) on {args.host}:{args.port} (log: {run_dir / 'serve.log'}) ...",
          flush=True)
    server = ServerProcess(["--model", model, "--run-dir", str(run_dir / "serve"), "--adapters-dir", str(adapters),
                            *keys.serve_args(), *serve_flags], host=args.host, port=args.port,
                           log_path=run_dir / "serve.log", timeout=900 if args.engine == "vllm" else 120)
    loop, demo, demo_url = None, None, f"http://{args.host}:{args.demo_port}"
    try:
        if not args.no_rl:
            # Online learning is the point of `up`: a crashed loop comes back and resumes from its state.
            loop = Supervised("RL loop", lambda: _start_loop(args, server.url, keys, model, run_dir),
                              run_dir / "rl.log")
        if not args.no_demo:
            print(f"starting the demo on {demo_url} (log: {run_dir / 'demo.log'}) ...", flush=True)
            demo = Supervised("demo", lambda: _start_demo(args, server.url, keys, run_dir), run_dir / "demo.log")
            # gradio takes a few seconds to import
            if not wait_for_url(demo.proc, demo_url, timeout=120, interval=0.5):
                print(f"the demo did not start; see {run_dir / 'demo.log'}. Serving the API anyway.", flush=True)
                demo.proc.kill()
                demo.proc.wait()
                demo = None  # what fails at start (a bad install) would fail again: no restarts
        print(f"\ndemo:                   {'off' if demo is None else demo_url + '   (open it in a browser)'}\n"
              f"OpenAI-compatible API:  {server.url}/v1   {keys.describe_api()}\n"
              f"admin key:              {keys.admin}   (saved in {keys.admin_file})\n"
              f"online RL loop:         {'off' if loop is None else f'trains after {args.rl_min_new} new graded interactions or ratings (log: ' + str(run_dir / 'rl.log') + ')'}\n"
              f"Ctrl-C stops everything.\n", flush=True)
        while server.proc.poll() is None:
            for child in (loop, demo):
                if child is not None:
                    child.tend()
            time.sleep(1.0)
        print(f"the gateway exited with {server.proc.returncode}:\n{server.output(2000)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        _stop([demo and demo.proc, loop and loop.proc], server)
