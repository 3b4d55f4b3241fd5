"""`openvlthinker serve`: start the OpenAI-compatible gateway (FastAPI on uvicorn) on one engine.

Precedence: ServeConfig defaults < `--config FILE.yaml` < flags given on the command line
(flags default to None here, so only what the user typed overrides). Heavy imports (torch,
transformers, FastAPI) happen inside `run`, keeping `openvlthinker --help` instant.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from .config import ENGINES, HTTP_IMPLS, LOOPS

# flag -> (ServeConfig field, type, help). Defaults live in ServeConfig only.
_FLAGS: list[tuple[str, str, Any, str]] = [
    ("--model", "model", str, "base model folder or hub id (default: the shipped tiny model)"),
    ("--engine", "engine", str, "transformers (embedded, default) or vllm"),
    ("--device", "device", str, "torch device for the transformers engine: cpu (default), cuda, auto"),
    ("--host", "host", str, "interface to bind (default 127.0.0.1)"),
    ("--port", "port", int, "port to bind (default 8000; 0 = any free port)"),
    ("--api-key", "api_key", str, "require 'Authorization: Bearer KEY' on every /v1 route"),
    ("--api-key-file", "api_key_file", str, "read the API key from this file; if it does not exist, generate a random "
                                            "key, save it there (mode 0600) and print it once"),
    ("--admin-key", "admin_key", str, "key for adapter admin and the interaction export (off without it)"),
    ("--run-dir", "run_dir", str, "folder for the store, images and adapter state (default runs/serve)"),
    ("--store", "store", str, "SQLAlchemy URL of the interaction store (default: SQLite in the run dir)"),
    ("--adapters-dir", "adapters_dir", str, "folder of policy-vNNNN/ adapter versions (default: RUN_DIR/adapters)"),
    ("--served-name", "served_name", str, "alias clients use as `model` (default openvlthinker)"),
    ("--images-dir", "images_dir", str, "folder of stored images (default: RUN_DIR/images); replicas name one shared folder"),
    ("--images-url", "images_url", str, "fsspec URL of stored images instead of a folder (s3://bucket/images needs s3fs)"),
    ("--registry-poll-s", "registry_poll_s", float,
     "seconds between reads of the adapter alias in the store; replicas follow a promote within this (default 1)"),
    ("--max-batch", "max_batch", int, "sequences decoded together (default 8)"),
    ("--max-queue", "max_queue", int, "waiting requests before answering 503 (default 64; vLLM engine: in flight)"),
    ("--max-n", "max_n", int, "largest n per request (default 8)"),
    ("--max-images", "max_images", int, "images per request (default 8)"),
    ("--max-image-bytes", "max_image_bytes", int, "encoded bytes per image (default 10 MiB)"),
    ("--max-image-pixels", "max_image_pixels", int, "width*height per image (default 16e6)"),
    ("--max-body-bytes", "max_body_bytes", int, "request body cap, 413 above (default: fits max-images images)"),
    ("--default-max-tokens", "default_max_tokens", int, "completion cap when a request sets none (default 1024)"),
    ("--threads", "threads", int, "torch threads of the engine (default 1)"),
    ("--log-level", "log_level", str, "debug, info, warning (default info)"),
    ("--http", "http", str, "HTTP parser: auto (httptools when installed, default), httptools, h11"),
    ("--loop", "loop", str, "event loop: auto (uvloop when installed, default), uvloop, asyncio"),
    ("--vllm-python", "vllm_python", str, "vLLM engine: python of an environment with vLLM (default: this one)"),
    ("--vllm-port", "vllm_port", int, "vLLM engine: vLLM's private loopback port (default: any free port)"),
    ("--vllm-start-timeout", "vllm_start_timeout_s", float, "vLLM engine: seconds to wait for vLLM to serve (default 900)"),
    ("--gpu-memory-utilization", "gpu_memory_utilization", float, "vLLM engine: fraction of GPU memory (default vLLM's 0.9)"),
    ("--tensor-parallel-size", "tensor_parallel_size", int, "vLLM engine: GPUs one model copy is split over (default 1)"),
    ("--pipeline-parallel-size", "pipeline_parallel_size", int, "vLLM engine: pipeline stages (default 1)"),
    ("--data-parallel-size", "data_parallel_size", int, "vLLM engine: model copies in the one vLLM server (default 1)"),
    ("--max-model-len", "max_model_len", int, "vLLM engine: context window (default: the model's)"),
    ("--max-lora-rank", "max_lora_rank", int, "vLLM engine: largest adapter rank (default 64)"),
    ("--max-loras", "max_loras", int, "vLLM engine: adapter versions resident at once (default 4)"),
]


_AUTH_HELP = """\
Safe defaults: without an API key the gateway binds only loopback addresses (the default
--host 127.0.0.1); a non-loopback --host (0.0.0.0, a LAN address, a hostname) is refused at
start unless --api-key or --api-key-file is given, or --insecure-no-auth. Remote images
(--allow-remote-images) are fetched only from public addresses. Feedback records a sha256
prefix of the key that sent it and whether that key is trusted to train the model.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`openvlthinker serve`'s options (every ServeConfig knob) and the auth defaults as the help's epilog."""
    parser.add_argument("--config", metavar="FILE", help="YAML file of ServeConfig fields (flags override it)")
    for flag, dest, kind, help_text in _FLAGS:
        kwargs: dict[str, Any] = {"dest": dest, "type": kind, "default": None, "help": help_text}
        choices = {"--engine": ENGINES, "--http": HTTP_IMPLS, "--loop": LOOPS}.get(flag)
        if choices:
            kwargs["choices"] = list(choices)
        parser.add_argument(flag, **kwargs)
    parser.add_argument("--vllm-arg", dest="vllm_args", action="append", default=None, metavar="ARGS",
                        help="vLLM engine: extra vLLM arguments, passed through last (repeatable; write "
                             "--vllm-arg=--enforce-eager or --vllm-arg='--dtype float32')")
    parser.add_argument("--engine-thread", dest="engine_process", action="store_const", const=False, default=None,
                        help="transformers engine: decode in a thread of the gateway process instead of a child "
                             "process (shares the GIL with HTTP handling; slower under load)")
    parser.add_argument("--allow-remote-images", dest="allow_remote_images", action="store_const", const=True,
                        default=None, help="also fetch http(s) image URLs (size and time limited; public "
                                           "addresses only, each redirect checked)")
    parser.add_argument("--remote-image-allow-network", dest="remote_image_allow_networks", action="append",
                        default=None, metavar="CIDR",
                        help="with --allow-remote-images: also fetch from this network although it is loopback, "
                             "private or link-local, e.g. 10.1.0.0/16 for an intranet image host (repeatable)")
    parser.add_argument("--insecure-no-auth", dest="insecure_no_auth", action="store_const", const=True,
                        default=None, help="bind a non-loopback --host without an API key anyway (only behind "
                                           "something else that authenticates clients)")
    parser.add_argument("--trusted-feedback-keys", dest="trusted_feedback_keys", action="append", default=None,
                        metavar="KEYS", help="comma-separated API keys whose feedback trains the RL loop (accepted "
                                             "as API keys too; repeatable). Default: every client's when the "
                                             "gateway binds loopback, nobody's otherwise. Other feedback is stored, "
                                             "marked untrusted")
    parser.epilog = _AUTH_HELP


def build_config(args: argparse.Namespace):
    """ServeConfig from the YAML file (if any) overridden by the flags that were given."""
    from .config import ServeConfig

    values: dict[str, Any] = {}
    if getattr(args, "config", None):
        import yaml

        with open(args.config, encoding="utf-8") as fh:
            try:
                loaded = yaml.safe_load(fh) or {}
            except yaml.YAMLError as exc:  # a message naming the file and the place, not a traceback
                raise ValueError(f"{args.config} is not valid YAML: {' '.join(str(exc).split())}") from None
        if not isinstance(loaded, dict):
            raise ValueError(f"{args.config}: expected a mapping of serve options")
        values.update({k.replace("-", "_"): v for k, v in loaded.items()})
    dests = [dest for _, dest, _, _ in _FLAGS] + ["allow_remote_images", "vllm_args", "engine_process",
                                                  "remote_image_allow_networks", "insecure_no_auth",
                                                  "trusted_feedback_keys"]
    values.update({d: getattr(args, d) for d in dests if getattr(args, d, None) is not None})
    return ServeConfig.from_mapping(values)


def make_engine(config):
    """The engine named by the config: the embedded transformers one, or vLLM as a managed child."""
    from openvlthinker.models import resolve_model_path

    if config.engine == "vllm":
        return _vllm_engine(config, resolve_model_path(config.model))
    from serve.engines.transformers.engine import TransformersEngine

    resolve_model_path(config.model)  # a missing folder or an offline hub id fails here, with a hint
    return TransformersEngine(config.model, device=config.device, max_batch=config.max_batch,
                              max_queue=config.max_queue, threads=config.threads, process=config.engine_process)


def _vllm_engine(config, model: str):
    """A VllmEngine from the config; vLLM itself starts with the gateway (in the app's lifespan)."""
    import shutil

    from serve.engines.vllm.engine import VllmEngine
    from serve.engines.vllm.process import VllmLaunch

    python = config.vllm_python or sys.executable
    if not shutil.which(python):
        raise ValueError(f"--vllm-python {python!r} is not an executable; pass the python of an environment "
                         "with vLLM installed (on a CPU machine: scripts/vllm-env.sh builds .venv-vllm)")
    launch = VllmLaunch(model=model, python=python, port=config.vllm_port, max_lora_rank=config.max_lora_rank,
                        max_loras=config.max_loras, max_images=config.max_images,
                        gpu_memory_utilization=config.gpu_memory_utilization,
                        tensor_parallel_size=config.tensor_parallel_size,
                        pipeline_parallel_size=config.pipeline_parallel_size,
                        data_parallel_size=config.data_parallel_size, max_model_len=config.max_model_len,
                        threads=config.threads, extra_args=list(config.vllm_args))
    return VllmEngine(launch, config.run_path, max_queue=config.max_queue, start_timeout=config.vllm_start_timeout_s)


def resolve_api_key(config) -> None:
    """Read (or create) `api_key_file` into `config.api_key`; a key created now is printed this once."""
    from pathlib import Path

    from .keys import load_or_create_key

    if not config.api_key_file:
        return
    config.api_key, created = load_or_create_key(Path(config.api_key_file))
    config.check_keys()
    if created:
        print(f"generated an API key for this gateway: {config.api_key}\n"
              f"  saved to {config.api_key_file} (mode 0600); clients send 'Authorization: Bearer <key>'. "
              "It is not printed again.", flush=True)


def run(args: argparse.Namespace) -> int:
    """Build the config, check the port, start the engine and serve until Ctrl-C."""
    from .launcher import ensure_port_free

    config = build_config(args)
    resolve_api_key(config)
    ensure_port_free(config.host, config.port)  # before minutes of model loading, not after
    engine = make_engine(config)
    import uvicorn

    from .app import create_app

    logging.basicConfig(level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config.run_path.mkdir(parents=True, exist_ok=True)
    app = create_app(config, engine)
    uvicorn.run(app, host=config.host, port=config.port, log_level=config.log_level, timeout_graceful_shutdown=10,
                http=config.http, loop=config.loop)
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m serve.cli ...`: the same as `openvlthinker serve ...`."""
    parser = argparse.ArgumentParser(prog="openvlthinker serve", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"openvlthinker serve: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
