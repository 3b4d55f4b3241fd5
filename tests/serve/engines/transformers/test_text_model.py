"""A text-only causal LM (Qwen3ForCausalLM + tokenizer, no image processor) on the transformers engine.

`openvlthinker serve --model <folder>` answers and streams a chat through the official `openai`
client and refuses an image with a 400 that names the image part; in a thread and in a child
process the engine decodes the same tokens.
"""

import asyncio
import base64
import io

import httpx
import openai
import pytest
from PIL import Image

from serve.engines.base import EngineError
from serve.launcher import ServerProcess

KEY = "sk-text"
ADMIN = "adm-text"


@pytest.fixture(scope="module")
def text_model(tmp_path_factory):
    from openvlthinker.tiny.text_model import text_model_from_shipped

    return text_model_from_shipped(tmp_path_factory.mktemp("text-model") / "model")  # trained weights: real answers


@pytest.fixture(scope="module")
def server(text_model, tmp_path_factory):
    run = tmp_path_factory.mktemp("text-serve")
    proc = ServerProcess(["--model", str(text_model), "--run-dir", str(run / "run"), "--threads", "1",
                          "--log-level", "warning", "--api-key", KEY, "--admin-key", ADMIN], log_path=run / "serve.log", timeout=90)
    yield proc
    proc.stop()


def _png_url() -> str:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


@pytest.mark.slow
def test_serve_on_a_text_model_answers_streams_and_refuses_an_image(server):
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0, timeout=60)
    ask = [{"role": "user", "content": "How many red circles are there if there are 3 and 5 more?"}]
    r = client.chat.completions.create(model="openvlthinker", messages=ask, max_tokens=32, temperature=0)
    choice = r.choices[0]
    assert choice.finish_reason in ("stop", "length") and 1 <= r.usage.completion_tokens <= 32
    said = (choice.message.content or "") + (getattr(choice.message, "reasoning_content", None) or "")
    assert said.strip(), r  # the shipped weights write something, not an empty message

    chunks = list(client.chat.completions.create(model="openvlthinker", messages=ask, max_tokens=32, temperature=0,
                                                  stream=True))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(chunks) > 2 and streamed == (choice.message.content or "")  # greedy: the same answer, in pieces

    image = [{"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                          {"type": "image_url", "image_url": {"url": _png_url()}}]}]
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="openvlthinker", messages=image, max_tokens=8)
    error = info.value.response.json()["error"]
    assert info.value.status_code == 400 and error["param"] == "messages[0].content[1]", error
    assert "image" in error["message"] and "text only" in error["message"], error
    after = client.chat.completions.create(model="openvlthinker", messages=ask, max_tokens=32, temperature=0)
    assert after.choices[0].message.content == choice.message.content  # the refusal left the engine serving
    info = httpx.get(f"{server.url}/v1/server", headers={"Authorization": f"Bearer {ADMIN}"}).json()
    assert info["images"] is False, info  # a client can tell before it sends an image


def test_a_text_model_decodes_the_same_in_a_thread_and_a_child_process(text_model, h):
    from serve.engines.transformers import TransformersEngine

    reqs = [h.request(h.user("How many red circles?"), max_tokens=16, rid="a", top_logprobs=2),
            h.request(h.user("Count."), max_tokens=10, rid="b", temperature=1.0, seed=3)]
    results = {}
    for process in (False, True):
        engine = TransformersEngine(str(text_model), process=process)
        asyncio.run(engine.start())
        try:
            assert engine.max_context == 4096 and engine.stats()["running"] == 0  # the config's window, read by the core
            results[process] = [r for _, r in h.run_many(engine, reqs)]
            with pytest.raises(EngineError, match=r"messages\[0\]\.content\[0\] is an image") as info:
                engine.count_prompt_tokens(h.user("What is this?", [h.shape_image()]), "think")
            assert info.value.param == "messages[0].content[0]"
        finally:
            asyncio.run(engine.stop())
    for thread, child in zip(results[False], results[True]):
        assert child.completion_token_ids == thread.completion_token_ids and child.text == thread.text
        assert child.completion_logprobs == pytest.approx(thread.completion_logprobs, abs=1e-5)
    assert results[False][0].text  # greedy decoding wrote something
