"""GPU check: vLLM serving and one bf16 LoRA round on the same CUDA device, as one table.

Starts `openvlthinker serve --engine vllm` on a local model folder (vLLM leaves part of the
device to the trainer: --gpu-memory-utilization), measures the engine's throughput through the
gateway at 1 and 16 concurrent clients on ShapeWorld image questions, then runs one round of
`openvlthinker rl --device cuda --dtype bfloat16 --grad-checkpointing` against it while vLLM
keeps serving. It prints tokens/s per client count, the trainer's optimizer-step time and peak
memory (torch.cuda.max_memory_allocated, from the round's metrics) and vLLM's and the trainer's
peak device memory as nvidia-smi sees their processes. scripts/gpu-check.sh is the wrapper.

    .venv/bin/python bench/gpu_check.py --model /models/Qwen3-VL-2B-Instruct --vllm-python .venv-gpu/bin/python
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/serve.py is named like the `serve` package: keep this folder off the import path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

API, ADMIN = "sk-gpu-check", "adm-gpu-check"


class CheckError(RuntimeError):
    """A precondition of the check does not hold; its message says what to do."""


def check_model(path: str) -> Path:
    """The model folder, which must be local (this check never downloads) and hold a config.json."""
    model = Path(path).expanduser()
    if not (model / "config.json").is_file():
        raise CheckError(f"--model {path!r} is not a local model folder (no config.json there); "
                         "pass a folder that holds the weights, e.g. MODEL=/models/Qwen3-VL-2B-Instruct")
    return model.resolve()


def check_fraction(value: str) -> float:
    """argparse type: a float in (0, 1)."""
    fraction = float(value)
    if not 0.0 < fraction < 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive), got {value}")
    return fraction


def check_clients(value: str) -> list[int]:
    """argparse type: comma-separated positive client counts."""
    try:
        levels = [int(c) for c in value.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {value!r}") from None
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError(f"client counts must be >= 1, got {value!r}")
    return levels


def check_cuda() -> str:
    """The CUDA device's name; a CheckError saying why when there is none (or no nvidia-smi)."""
    import torch

    if not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise CheckError(f"no CUDA device: torch {torch.__version__} ({build}) sees none. This check measures "
                         "vLLM and the trainer on a GPU; run it on a CUDA machine (nvidia-smi must list the GPU)")
    if shutil.which("nvidia-smi") is None:
        raise CheckError("nvidia-smi is not on PATH: it reports vLLM's device memory; install the NVIDIA driver tools")
    return torch.cuda.get_device_name(0)


def gpu_memory_by_pid() -> dict[int, float]:
    """MiB of device memory per process, as nvidia-smi lists compute apps."""
    out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    usage: dict[int, float] = {}
    for line in out.splitlines():
        pid, _, mib = line.partition(",")
        if pid.strip().isdigit() and mib.strip().replace(".", "", 1).isdigit():
            usage[int(pid)] = usage.get(int(pid), 0.0) + float(mib)
    return usage


class MemorySampler:
    """Samples nvidia-smi in a thread: peak MiB of the trainer's process and of all others on the device (vLLM's
    API server, engine and workers; another job's too, if one shares the GPU)."""

    def __init__(self, interval: float = 0.5, sample=gpu_memory_by_pid):
        self.interval, self.sample = interval, sample
        self.trainer_pid: int | None = None
        self.peak = {"vllm": 0.0, "trainer": 0.0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.record(self.sample())
            except (OSError, subprocess.SubprocessError) as exc:  # a driver hiccup costs samples, not the check
                print(f"gpu-check: nvidia-smi failed ({exc}); memory peaks may be low", file=sys.stderr)
            self._stop.wait(self.interval)

    def record(self, usage: dict[int, float]) -> None:
        """Fold one sample into the peaks."""
        trainer = usage.get(self.trainer_pid, 0.0) if self.trainer_pid else 0.0
        others = sum(mib for pid, mib in usage.items() if pid != self.trainer_pid)
        self.peak["trainer"] = max(self.peak["trainer"], trainer)
        self.peak["vllm"] = max(self.peak["vllm"], others)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def image_requests(n: int) -> list[dict]:
    """`n` ShapeWorld questions as a client sends them: the image (PNG data URL), the bare question, and its
    problem type and options in metadata (they pick the prompt's answer format, as for the RL loop's requests)."""
    from openvlthinker.data.loading import png_data_url
    from openvlthinker.evaluation import load_eval_data

    out = []
    for record, images in load_eval_data(f"shapeworld:eval:{max(1, -(-n // 6))}")[:n]:
        content = [*({"type": "image_url", "image_url": {"url": png_data_url(image)}} for image in images),
                   {"type": "text", "text": record.problem.replace("<image>", "").strip()}]
        metadata = {"problem_type": record.problem_type, "task_type": record.task_type}
        if record.options:
            metadata["options"] = json.dumps(list(record.options))
        out.append({"messages": [{"role": "user", "content": content}], "metadata": metadata})
    return out


def throughput(client, requests: list[dict], clients: int, max_tokens: int) -> dict[str, float]:
    """Completion tokens per second with `clients` concurrent callers (greedy; the model thinks, then answers)."""
    def one(request: dict) -> int:
        r = client.chat.completions.create(model="openvlthinker", max_tokens=max_tokens, temperature=0, **request)
        return r.usage.completion_tokens

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        tokens = sum(pool.map(one, requests))
    wall = time.perf_counter() - start
    return {"clients": clients, "requests": len(requests), "tokens": tokens, "tok_s": tokens / wall,
            "req_s": len(requests) / wall}


def rl_command(endpoint: str, out: Path, group_size: int, prompts: int, extra: list[str]) -> list[str]:
    """`openvlthinker rl` for one bf16 round on CUDA against the gateway."""
    return [sys.executable, "-m", "openvlthinker.cli", "rl", "--endpoint", f"{endpoint}/v1", "--api-key", API,
            "--admin-key", ADMIN, "--device", "cuda", "--dtype", "bfloat16", "--grad-checkpointing",
            "--rounds", "1", "--group-size", str(group_size), "--prompts-per-round", str(prompts),
            "--out", str(out), *extra]


def read_round(out: Path) -> dict:
    """The last round's metrics from `openvlthinker rl`'s metrics.jsonl."""
    path = out / "metrics.jsonl"
    if not path.is_file():
        raise CheckError(f"the RL round wrote no {path}; see {out / 'rl.log'}")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not rows:
        raise CheckError(f"{path} is empty; see {out / 'rl.log'}")
    return rows[-1]


def format_table(device: str, model: str, engine: list[dict], trainer: dict, memory: dict[str, float]) -> str:
    """The check's one table: engine throughput per client count, then step time and peak memory of both."""
    def ms(seconds) -> str:
        return f"{seconds * 1e3:.0f} ms" if isinstance(seconds, (int, float)) else "n/a"

    def mib(value) -> str:
        return f"{value:,.0f} MiB" if isinstance(value, (int, float)) and value > 0 else "n/a"

    rows = [("device", device), ("model", model)]
    rows += [(f"vLLM throughput, {e['clients']} client{'s' if e['clients'] != 1 else ''}",
              f"{e['tok_s']:.1f} tok/s ({e['req_s']:.2f} req/s, {e['tokens']} tokens)") for e in engine]
    rows += [("trainer step time (bf16 LoRA, mean)", ms(trainer.get("step_s"))),
             ("trainer round wall time", f"{trainer['wall_s']:.1f} s" if "wall_s" in trainer else "n/a"),
             ("trainer peak memory (max_memory_allocated)", mib(trainer.get("peak_mem_mb"))),
             ("trainer peak memory (nvidia-smi)", mib(memory.get("trainer"))),
             ("vLLM peak memory (nvidia-smi)", mib(memory.get("vllm")))]
    width = max(len(name) for name, _ in rows)
    lines = [f"| {'what':<{width}} | value |", f"|{'-' * (width + 2)}|-------|"]
    lines += [f"| {name:<{width}} | {value} |" for name, value in rows]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="local model folder (never downloaded)")
    parser.add_argument("--vllm-python", default=sys.executable,
                        help="python of the environment with (CUDA) vLLM installed (default: this one)")
    parser.add_argument("--gpu-memory-utilization", type=check_fraction, default=0.45,
                        help="vLLM's share of the device; the rest is the trainer's (default 0.45)")
    parser.add_argument("--max-model-len", type=int, default=4096)
    parser.add_argument("--requests", type=int, default=32, help="requests per client count (default 32)")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--clients", type=check_clients, default=[1, 16], help="comma-separated (default 1,16)")
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--prompts-per-round", type=int, default=4)
    parser.add_argument("--rl-arg", action="append", default=[], metavar="ARG",
                        help="one more flag for `openvlthinker rl` (repeatable)")
    parser.add_argument("--out", type=Path, help="keep logs and metrics here (default: a temporary folder)")
    args = parser.parse_args(argv)
    for name in ("max_model_len", "requests", "max_tokens", "group_size", "prompts_per_round"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def run(args: argparse.Namespace, out: Path) -> str:
    """Serve, measure, train one round; the table."""
    from openai import OpenAI

    from serve.launcher import ServerProcess

    model = check_model(args.model)
    device = check_cuda()
    server = ServerProcess(
        ["--engine", "vllm", "--model", str(model), "--vllm-python", args.vllm_python,
         "--gpu-memory-utilization", str(args.gpu_memory_utilization), "--max-model-len", str(args.max_model_len),
         "--api-key", API, "--admin-key", ADMIN, "--run-dir", str(out / "serve"), "--max-queue", "256",
         "--log-level", "warning"],
        log_path=out / "gateway.log", timeout=1200)
    try:
        with MemorySampler() as memory:
            client = OpenAI(base_url=f"{server.url}/v1", api_key=API, max_retries=0, timeout=600)
            requests = image_requests(args.requests)
            throughput(client, requests[:4], 4, 8)  # warm-up: CUDA graphs, caches, connection pool
            engine = [throughput(client, requests, c, args.max_tokens) for c in args.clients]
            rl_out = out / "rl"
            rl_out.mkdir(parents=True, exist_ok=True)
            with open(rl_out / "rl.log", "wb") as log:
                proc = subprocess.Popen(rl_command(server.url, rl_out, args.group_size, args.prompts_per_round,
                                                   args.rl_arg), stdout=log, stderr=subprocess.STDOUT)
                memory.trainer_pid = proc.pid
                if proc.wait() != 0:
                    raise CheckError(f"`openvlthinker rl` exited with {proc.returncode}; see {rl_out / 'rl.log'}")
            trainer = read_round(rl_out)
    finally:
        server.stop(timeout=120)
    return format_table(device, str(model), engine, trainer, memory.peak)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            print(run(args, args.out.resolve()))
        else:
            with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
                print(run(args, Path(tmp)))
    except CheckError as exc:
        print(f"gpu-check: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
