"""Benchmark: the gateway's HTTP client to vLLM, httpx vs aiohttp, CPU per request on the event loop.

The vLLM engine forwards every completion to vLLM over loopback HTTP from the gateway's event
loop, so the client's own CPU per request is gateway overhead. A stand-in upstream (a uvicorn
app that waits 50 ms, like a short decode, then answers with a vLLM-sized chat JSON reply) takes
the same requests from both clients at 1 and 16 in flight, alternating; the CPU time of the
client's process is divided by the requests.

    .venv/bin/python bench/upstream_client.py [--requests 200] [--rounds 3]
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/serve.py is named like the `serve` package: keep this folder off the import path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import asyncio
import json
import statistics
import subprocess
import time

import aiohttp
import httpx

from serve.launcher import free_port, wait_for_url

BODY = {"model": "base", "messages": [{"role": "user", "content": "How many circles are left? " * 4}],
        "max_tokens": 32, "temperature": 0, "logprobs": True, "return_token_ids": True}

# The stand-in upstream, run as `python -c` (a 50 ms "decode", then a reply shaped like vLLM's).
UPSTREAM = """
import asyncio, json, sys
import uvicorn
reply = json.dumps({"id": "chatcmpl-x", "prompt_token_ids": list(range(60)), "usage": {"completion_tokens": 32},
    "choices": [{"index": 0, "finish_reason": "stop", "token_ids": list(range(32)),
                 "message": {"role": "assistant", "content": "word " * 32},
                 "logprobs": {"content": [{"token": "word", "logprob": -0.1, "bytes": [119], "top_logprobs": []}] * 32}}]}
    ).encode()
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    if scope["path"] != "/health":
        await asyncio.sleep(0.05)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(reply)).encode())]})
    await send({"type": "http.response.body", "body": reply})
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


async def with_httpx(url: str, requests: int, concurrency: int) -> float:
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(30, read=None),
                                 limits=httpx.Limits(max_connections=264)) as client:
        async def one() -> None:
            response = await client.post("/v1/chat/completions", json=BODY)
            json.loads(response.text)

        return await _measure(one, requests, concurrency)


async def with_aiohttp(url: str, requests: int, concurrency: int) -> float:
    async with aiohttp.ClientSession(base_url=url, timeout=aiohttp.ClientTimeout(total=None, connect=30),
                                     connector=aiohttp.TCPConnector(limit=264)) as client:
        async def one() -> None:
            async with client.post("/v1/chat/completions", json=BODY) as response:
                json.loads(await response.text())

        return await _measure(one, requests, concurrency)


async def _measure(one, requests: int, concurrency: int) -> float:
    """CPU milliseconds of this process per request, `concurrency` in flight (after a warm-up)."""
    gate = asyncio.Semaphore(concurrency)

    async def gated() -> None:
        async with gate:
            await one()

    await asyncio.gather(*(gated() for _ in range(concurrency)))
    start = time.process_time()
    await asyncio.gather(*(gated() for _ in range(requests)))
    return (time.process_time() - start) / requests * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    port = free_port()
    upstream = subprocess.Popen([sys.executable, "-c", UPSTREAM, str(port)])
    url = f"http://127.0.0.1:{port}"
    try:
        if not wait_for_url(upstream, f"{url}/health", timeout=60):
            sys.exit("the stand-in upstream did not start")
        clients = {"httpx": with_httpx, "aiohttp": with_aiohttp}
        cpu: dict[tuple[str, int], list[float]] = {}
        for _ in range(args.rounds):
            for concurrency in (1, 16):
                for name, run in clients.items():
                    cpu.setdefault((name, concurrency), []).append(asyncio.run(run(url, args.requests, concurrency)))
    finally:
        upstream.kill()
        upstream.wait()
    print(f"{args.requests} chat requests per round to a stand-in upstream (50 ms per reply), "
          f"{args.rounds} alternating rounds, median; client CPU ms per request")
    print(f"{'in flight':>9}{'httpx':>9}{'aiohttp':>9}   httpx / aiohttp")
    for concurrency in (1, 16):
        a, b = (statistics.median(cpu[name, concurrency]) for name in clients)
        print(f"{concurrency:>9}{a:>9.2f}{b:>9.2f}   {a / b:.2f}x")


if __name__ == "__main__":
    main()
