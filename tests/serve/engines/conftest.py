"""Shared fixtures: a tiny random Qwen3-VL folder, a started engine, LoRA adapter folders, helpers.

The engine is loop-agnostic (its worker is a thread), so one session engine serves tests
that each drive it with their own `asyncio.run`.
"""

import asyncio

import pytest
from PIL import Image, ImageDraw

from openvlthinker.tiny.build import build_tiny, sample_texts
from serve.engines.base import GenerationRequest, GenerationResult, SamplingParams


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    return build_tiny(tmp_path_factory.mktemp("engine-tiny") / "model", sample_texts(), seed=0)


@pytest.fixture(scope="session")
def make_engine(tiny_dir):
    """Start engines on the tiny model (stopped at session end); kwargs go to the constructor."""
    from serve.engines.transformers.engine import TransformersEngine

    started = []

    def make(**kwargs):
        engine = TransformersEngine(str(tiny_dir), **kwargs)
        asyncio.run(engine.start())
        started.append(engine)
        return engine

    yield make
    for engine in started:
        asyncio.run(engine.stop())


@pytest.fixture(scope="session")
def engine_variants(make_engine, adapter_dirs):
    """{value: engine} for one constructor option, each engine with the same first `adapters` LoRA versions."""

    def make(option, values, adapters=1):
        out = {}
        for value in values:
            eng = make_engine(batch_wait_ms=50, **{option: value})
            for i in range(adapters):
                asyncio.run(eng.load_adapter(f"v{i + 1}", adapter_dirs[i]))
            out[value] = eng
        return out

    return make


@pytest.fixture(scope="session")
def engine(make_engine):
    # A generous batch window so requests started together by asyncio.gather share one batch.
    return make_engine(batch_wait_ms=50)


def _adapter(tiny_dir, out, seed):
    from openvlthinker.models import random_lora

    return str(random_lora(str(tiny_dir), out, seed=seed, r=4))


@pytest.fixture(scope="session")
def adapter_dirs(tiny_dir, tmp_path_factory):
    """Two different valid LoRA folders for the tiny model."""
    root = tmp_path_factory.mktemp("adapters")
    return [_adapter(tiny_dir, root / f"policy-v{i:04d}", seed=i + 1) for i in range(2)]


def shape_image(w=128, h=128, color="red"):
    img = Image.new("RGB", (w, h), "white")
    ImageDraw.Draw(img).ellipse((w // 4, h // 4, w // 2, h // 2), fill=color)
    return img


def user(question, images=()):
    parts = [{"type": "image", "image": img} for img in images]
    return [{"role": "user", "content": parts + [{"type": "text", "text": question}]}]


def request(messages, max_tokens=12, rid="r", **kw):
    sampling = {k: kw.pop(k) for k in list(kw) if k in SamplingParams.__dataclass_fields__}
    return GenerationRequest(rid, messages, SamplingParams(max_tokens=max_tokens, temperature=sampling.pop(
        "temperature", 0.0), **sampling), **kw)


async def collect(engine, req):
    """All items of one generation: (token events, result)."""
    items = [item async for item in engine.generate(req)]
    assert isinstance(items[-1], GenerationResult)
    assert not any(isinstance(i, GenerationResult) for i in items[:-1])
    return items[:-1], items[-1]


def run_one(engine, req):
    return asyncio.run(collect(engine, req))


def run_many(engine, reqs):
    async def main():
        return await asyncio.gather(*(collect(engine, r) for r in reqs))

    return asyncio.run(main())


class Helpers:
    shape_image = staticmethod(shape_image)
    user = staticmethod(user)
    request = staticmethod(request)
    collect = staticmethod(collect)
    run_one = staticmethod(run_one)
    run_many = staticmethod(run_many)


@pytest.fixture(scope="session")
def h():
    """Helpers as a fixture (tests are imported by path, so they cannot import conftest)."""
    return Helpers
