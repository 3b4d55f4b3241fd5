"""Function calling, structured outputs and vLLM's sampling extras through the official `openai` SDK.

A real `openvlthinker serve` process on the tiny random Qwen3-VL decodes every held answer: the
grammar alone must make a random model's answer a valid call or a JSON document. A random model
never calls a tool of its own accord, so the `tool_choice=auto` parsing is driven by the scripted
engine (conftest.ScriptedEngine) that writes a call, in process.
"""

import json

import openai
import pytest

TOOLS = [
    {"type": "function", "function": {"name": "count", "description": "Count objects of one shape",
                                      "parameters": {"type": "object", "additionalProperties": False,
                                                     "required": ["shape"],
                                                     "properties": {"shape": {"enum": ["circle", "square"]}}}}},
    {"type": "function", "function": {"name": "colour", "parameters": {
        "type": "object", "additionalProperties": False, "required": ["of"],
        "properties": {"of": {"enum": ["big", "small"]}}}}},
]
SHAPE = {"type": "object", "additionalProperties": False, "required": ["shape", "many"],
         "properties": {"shape": {"enum": ["circle", "square", "triangle"]}, "many": {"type": "boolean"}}}
ASK = [{"role": "user", "content": "How many circles are there?"}]


@pytest.fixture(scope="module")
def client(start_server):
    return start_server("--max-batch", "4").client(max_retries=0, timeout=120)


def _calls(message):
    return [(c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls or []]


@pytest.mark.parametrize("effort", ["none", "low"])
def test_required_tool_choice_always_gives_a_valid_call(client, effort):
    r = client.chat.completions.create(model="openvlthinker", messages=ASK, tools=TOOLS, tool_choice="required",
                                       reasoning_effort=effort, max_tokens=400, n=3, seed=1)
    for choice in r.choices:
        assert choice.finish_reason == "tool_calls", choice.message
        calls = _calls(choice.message)
        assert calls and all(name in ("count", "colour") for name, _ in calls)
        for name, args in calls:
            assert args in ([{"shape": "circle"}, {"shape": "square"}] if name == "count"
                            else [{"of": "big"}, {"of": "small"}])
        assert all(c.id.startswith("call_") for c in choice.message.tool_calls)


def test_named_tool_choice_and_parallel_false_give_one_call_of_that_tool(client):
    r = client.chat.completions.create(model="openvlthinker", messages=ASK, tools=TOOLS, parallel_tool_calls=False,
                                       tool_choice={"type": "function", "function": {"name": "colour"}},
                                       reasoning_effort="none", max_tokens=200, temperature=1.0, n=4, seed=7)
    for choice in r.choices:
        assert [name for name, _ in _calls(choice.message)] == ["colour"]


def test_streamed_tool_calls_arrive_as_deltas(client):
    stream = client.chat.completions.create(model="openvlthinker", messages=ASK, tools=TOOLS, tool_choice="required",
                                            reasoning_effort="none", max_tokens=300, stream=True)
    deltas, finish = [], None
    for chunk in stream:
        for choice in chunk.choices:
            deltas += choice.delta.tool_calls or []
            finish = choice.finish_reason or finish
    assert finish == "tool_calls" and deltas
    assert all(d.id and d.function.name and json.loads(d.function.arguments) is not None for d in deltas)
    assert [d.index for d in deltas] == list(range(len(deltas)))


def test_tool_results_in_the_history_reach_the_model(client):
    first = client.chat.completions.create(model="openvlthinker", messages=ASK, tools=TOOLS, tool_choice="required",
                                           reasoning_effort="none", max_tokens=300)
    call = first.choices[0].message.tool_calls[0]
    history = [*ASK, {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
               {"role": "tool", "tool_call_id": call.id, "content": "3"}]
    second = client.chat.completions.create(model="openvlthinker", messages=history, tools=TOOLS, max_tokens=20)
    # A count of the prompt: the tool result adds tokens the bare question does not have.
    assert second.usage.prompt_tokens > first.usage.prompt_tokens
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="openvlthinker", messages=[*ASK, {"role": "tool", "tool_call_id": "x",
                                                                              "content": "3"}], max_tokens=5)
    assert "tool_call_id" in str(err.value)


@pytest.mark.parametrize("effort", ["none", "low"])
def test_json_schema_answers_follow_the_schema(client, effort):
    r = client.chat.completions.create(
        model="openvlthinker", messages=ASK, reasoning_effort=effort, max_tokens=400, n=3, seed=2,
        response_format={"type": "json_schema", "json_schema": {"name": "shape", "schema": SHAPE}})
    for choice in r.choices:
        assert choice.finish_reason == "stop"
        answer = json.loads(choice.message.content)
        assert answer["shape"] in ("circle", "square", "triangle") and isinstance(answer["many"], bool)
        if effort == "low":
            assert choice.message.reasoning_content is not None


def test_json_object_answers_are_json_objects_when_they_finish(client):
    r = client.chat.completions.create(model="openvlthinker", messages=ASK, response_format={"type": "json_object"},
                                       reasoning_effort="none", max_tokens=60, n=4, seed=3, temperature=0.7)
    for choice in r.choices:
        assert choice.message.content.startswith("{")
        if choice.finish_reason == "stop":
            assert isinstance(json.loads(choice.message.content), dict)


def test_bad_schemas_and_parameters_are_400s_naming_them(client):
    cases = [
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "objectx"}}}},
         "response_format.json_schema.schema"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": 3}}}]},
         "tools[0].function.parameters"),
        ({"extra_body": {"chat_template_kwargs": {"tokenize": True}}}, "chat_template_kwargs"),
        ({"extra_body": {"top_k": -5}}, "top_k"),
        ({"response_format": {"type": "json_object"},
          "messages": [*ASK, {"role": "assistant", "content": "<answer>"}]}, "messages"),
    ]
    for body, param in cases:
        with pytest.raises(openai.BadRequestError) as err:
            client.chat.completions.create(**{"model": "openvlthinker", "messages": ASK, "max_tokens": 5, **body})
        assert err.value.body["param"].startswith(param), (body, err.value.body)


def test_sampling_extras_and_enable_thinking(client):
    base = dict(model="openvlthinker", messages=ASK, max_tokens=12, temperature=1.0, seed=11)
    greedy_k = client.chat.completions.create(**base, extra_body={"top_k": 1})
    greedy = client.chat.completions.create(**{**base, "temperature": 0.0})
    assert greedy_k.choices[0].message.content == greedy.choices[0].message.content  # top_k=1 is greedy
    tight = client.chat.completions.create(**base, extra_body={"min_p": 1.0})
    assert tight.choices[0].message.content == greedy.choices[0].message.content  # only the top token survives
    a = client.chat.completions.create(**base, extra_body={"repetition_penalty": 1.8})
    b = client.chat.completions.create(**base, extra_body={"repetition_penalty": 1.8})
    assert a.choices[0].message.content == b.choices[0].message.content  # seeded: the same draw
    direct = client.chat.completions.create(**base, extra_body={"chat_template_kwargs": {"enable_thinking": False}})
    assert direct.choices[0].message.reasoning_content is None
    assert direct.usage.completion_tokens_details.reasoning_tokens == 0


def test_auto_tool_calls_are_parsed_from_the_answer(make_client, h):
    script = ('<thinking>I need the count.</thinking><answer>Checking.\n<tool_call>\n'
              '{"name": "count", "arguments": {"shape": "circle"}}\n</tool_call></answer>')
    client = make_client(h.ScriptedEngine(script))  # see the module docstring
    body = {"model": "openvlthinker", "messages": ASK, "tools": TOOLS}
    r = client.post("/v1/chat/completions", json=body).json()
    msg = r["choices"][0]
    assert msg["finish_reason"] == "tool_calls" and msg["message"]["content"] == "Checking."
    assert msg["message"]["tool_calls"][0]["function"] == {"name": "count", "arguments": '{"shape": "circle"}'}
    none = client.post("/v1/chat/completions", json={**body, "tool_choice": "none"}).json()["choices"][0]
    assert none["finish_reason"] == "stop" and not none["message"].get("tool_calls")
    sent = client.app.state.engine.requests[-1]
    assert "<tools>" not in json.dumps([p.get("text", "") for m in sent.messages for p in m["content"]])


# The Responses API on the same path: flat function tools, function_call items, text.format.
FLAT_TOOLS = [{"type": "function", **t["function"]} for t in TOOLS]


def test_responses_function_calls_and_their_outputs(client):
    r = client.responses.create(model="openvlthinker", input="How many circles are there?", tools=FLAT_TOOLS,
                                tool_choice="required", reasoning={"effort": "none"}, max_output_tokens=300)
    calls = [item for item in r.output if item.type == "function_call"]
    assert r.status == "completed" and calls, r.output
    for call in calls:
        assert call.name in ("count", "colour") and call.call_id.startswith("call_")
        assert json.loads(call.arguments) in ([{"shape": "circle"}, {"shape": "square"}] if call.name == "count"
                                              else [{"of": "big"}, {"of": "small"}])
    results = [{"type": "function_call_output", "call_id": c.call_id, "output": "3"} for c in calls]
    follow = client.responses.create(model="openvlthinker", previous_response_id=r.id, input=results,
                                     tools=FLAT_TOOLS, reasoning={"effort": "none"}, max_output_tokens=20)
    assert follow.usage.input_tokens > r.usage.input_tokens  # the call and its result are in the prompt
    resent = client.responses.create(model="openvlthinker", tools=FLAT_TOOLS, reasoning={"effort": "none"},
                                     max_output_tokens=20,
                                     input=[{"role": "user", "content": "How many circles are there?"}, *r.output,
                                            *results])
    assert resent.usage.input_tokens == follow.usage.input_tokens
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model="openvlthinker", input=[{"type": "function_call_output", "call_id": "nope",
                                                               "output": "3"}], max_output_tokens=5)
    assert err.value.body["param"] == "input[0].call_id"


def test_responses_named_call_streams_as_function_call_events(client):
    stream = client.responses.create(model="openvlthinker", input="How many circles are there?", tools=FLAT_TOOLS,
                                     tool_choice={"type": "function", "name": "colour"}, reasoning={"effort": "none"},
                                     max_output_tokens=200, stream=True)
    events = list(stream)
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert len(done) == 1 and json.loads(done[0].arguments) in ({"of": "big"}, {"of": "small"})
    final = events[-1].response
    assert events[-1].type == "response.completed" and [i.type for i in final.output] == ["function_call"]
    assert final.output[0].name == "colour" and final.output[0].arguments == done[0].arguments


@pytest.mark.parametrize("effort", ["none", "low"])
def test_responses_text_format_json_schema(client, effort):
    r = client.responses.create(model="openvlthinker", input="How many circles are there?",
                                reasoning={"effort": effort}, max_output_tokens=400,
                                text={"format": {"type": "json_schema", "name": "shape", "schema": SHAPE}})
    assert r.status == "completed" and r.text.format.type == "json_schema"
    answer = json.loads(r.output_text)
    assert answer["shape"] in ("circle", "square", "triangle") and isinstance(answer["many"], bool)
    assert client.responses.retrieve(r.id).output_text == r.output_text
