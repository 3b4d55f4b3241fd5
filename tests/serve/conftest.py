"""Fixtures for the gateway tests: a scripted engine for in-process tests, and real server processes.

In-process tests (`client`) drive `create_app` through Starlette's TestClient with
`ScriptedEngine`, a stand-in that speaks the engine protocol and replays a scripted completion
in small pieces (so tags are split across tokens). End-to-end tests (`server`) start
`python -m openvlthinker.cli serve` on 127.0.0.1 with the real TransformersEngine on a tiny
random Qwen3-VL built once per session, and talk to it with the official `openai` SDK.
Tests are imported by path, so helpers are handed out as fixtures.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import time
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from serve.engines.base import EngineError, EngineOverloaded, GenerationResult, TokenEvent
from serve.launcher import ServerProcess

SCRIPT = "<thinking>I see one red circle.</thinking>\n<answer>1</answer>"


# ------------------------------------------------------------------ scripted engine

class ScriptedEngine:
    """Engine protocol stand-in: replays `script` (str or fn(request) -> str) in 3-character tokens."""

    def __init__(self, script=SCRIPT, delay: float = 0.0, max_context: int = 512):
        self.model_name, self.max_context = "scripted-model", max_context
        self.script, self.delay = script, delay
        self.adapters: dict[str, str] = {}
        self.requests: list = []
        self.fail: Exception | None = None  # raised by the next generate() calls
        self.running = 0
        self.started = self.stopped = False

    async def start(self):
        self.started = True

    async def stop(self):
        self.stopped = True

    def count_prompt_tokens(self, messages, mode):
        words = sum(len(p["text"].split()) for m in messages for p in m["content"] if p["type"] == "text")
        return words + 16 * sum(p["type"] == "image" for m in messages for p in m["content"])

    async def generate(self, request):
        if self.fail is not None:
            raise self.fail
        if request.adapter is not None and request.adapter not in self.adapters:
            raise EngineError(f"adapter {request.adapter} not loaded")
        self.requests.append(request)
        text = self.script(request) if callable(self.script) else self.script
        for stop in request.sampling.stop:
            if stop in text:
                text = text[: text.index(stop)]
        pieces = [text[i:i + 3] for i in range(0, len(text), 3)][: request.sampling.max_tokens]
        finish = "length" if len(pieces) * 3 < len(text) else "stop"
        text = "".join(pieces)
        self.running += 1
        try:
            for i, piece in enumerate(pieces):
                await asyncio.sleep(self.delay)
                tops = tuple((f"t{k}", -0.5 - k) for k in range(request.sampling.top_logprobs))
                yield TokenEvent(100 + i, piece, -0.25, tops)
        finally:
            self.running -= 1
        think = "</thinking>" in text and text.index("</thinking>") // 3 + 1 or 0
        yield GenerationResult(text=text, prompt_token_ids=[1, 2, 3, 4], completion_token_ids=[100 + i for i in range(len(pieces))],
                               completion_logprobs=[-0.25] * len(pieces), finish_reason=finish, thinking_tokens=think,
                               adapter=request.adapter)

    async def load_adapter(self, name, path):
        if name in self.adapters:
            raise EngineError("name reused")
        self.adapters[name] = path

    async def unload_adapter(self, name):
        self.adapters.pop(name)

    def loaded_adapters(self):
        return list(self.adapters)

    def stats(self):
        return {"queue_depth": 0.0, "running": float(self.running), "last_batch_size": 1.0}


class Overloaded(ScriptedEngine):
    def __init__(self):
        super().__init__()
        self.fail = EngineOverloaded("queue full")


# --------------------------------------------------------------------------- helpers

def png_bytes(w=64, h=64, color="red") -> bytes:
    img = Image.new("RGB", (w, h), "white")
    ImageDraw.Draw(img).ellipse((w // 4, h // 4, w // 2, h // 2), fill=color)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def data_url(data: bytes, mime="image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def image_message(text="How many circles?", *images: bytes) -> list[dict]:
    parts = [{"type": "image_url", "image_url": {"url": data_url(b)}} for b in images]
    return [{"role": "user", "content": parts + [{"type": "text", "text": text}]}]


def write_adapter(base_dir, out: Path, seed: int, parent: str | None = None, metrics: dict | None = None) -> Path:
    """A random (non-zero) LoRA folder for the tiny model, with a manifest carrying sha256s."""
    from openvlthinker.models import random_lora

    random_lora(str(base_dir), out, seed=seed, r=4)
    sums = {f: hashlib.sha256((out / f).read_bytes()).hexdigest()
            for f in ("adapter_config.json", "adapter_model.safetensors")}
    manifest = {"version": out.name.split("-", 1)[1], "parent": parent, "sha256": sums, "metrics": metrics or {}}
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


class Helpers:
    ScriptedEngine = ScriptedEngine
    Overloaded = Overloaded
    png_bytes = staticmethod(png_bytes)
    data_url = staticmethod(data_url)
    image_message = staticmethod(image_message)
    write_adapter = staticmethod(write_adapter)
    SCRIPT = SCRIPT


@pytest.fixture(scope="session")
def h():
    return Helpers


@pytest.fixture
def make_client(tmp_path):
    """`make_client(engine=None, **config)` -> a started TestClient on a fresh run dir."""
    from fastapi.testclient import TestClient

    from serve.app import create_app
    from serve.config import ServeConfig

    clients = []

    def make(engine=None, **overrides):
        config = ServeConfig(model="scripted-model", run_dir=str(tmp_path / f"run{len(clients)}"), **overrides)
        app = create_app(config, engine or ScriptedEngine())
        client = TestClient(app, raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


# ---------------------------------------------------------------------- real servers

class Server(ServerProcess):
    """The gateway on a tiny model in a subprocess, with the SDK client the tests use."""

    def __init__(self, model_dir, run_dir, *args: str, timeout: float = 90):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        super().__init__(
            ["--model", str(model_dir), "--run-dir", str(run_dir), "--threads", "1", "--log-level", "warning", *args],
            log_path=self.run_dir.parent / f"{self.run_dir.name}-{time.time_ns()}.log", timeout=timeout,
        )

    def client(self, api_key="none", **kwargs):
        from openai import OpenAI

        return OpenAI(base_url=f"{self.url}/v1", api_key=api_key, **kwargs)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    from openvlthinker.tiny.build import build_tiny, sample_texts

    return build_tiny(tmp_path_factory.mktemp("serve-tiny") / "model", sample_texts(), seed=0)


@pytest.fixture(scope="session")
def start_server(tmp_path_factory, tiny_model):
    """`start_server(*flags, run_dir=None)` -> Server (stopped at session end)."""
    servers = []

    def start(*flags, run_dir=None):
        run_dir = run_dir or tmp_path_factory.mktemp("serve-run")
        server = Server(tiny_model, run_dir, *flags)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
