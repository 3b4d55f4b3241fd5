"""Function calling as text and the JSON schema of forced calls (pure functions, no server)."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from serve.protocol import ChatCompletionRequest
from serve.tool_calls import answer_schema, call_text, parse_answer, tool_response_text, tools_text
from serve.tool_protocol import ResponseFormat, ToolCall, ToolDef

ADD = ToolDef.model_validate({"type": "function", "function": {
    "name": "add", "description": "Add two integers",
    "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}}}})
AREA = ToolDef.model_validate({"type": "function", "function": {"name": "area"}})


def test_tools_text_lists_every_signature_and_the_call_format():
    text = tools_text([ADD, AREA])
    assert "<tools>" in text and "</tools>" in text and "<tool_call>" in text
    lines = text.split("<tools>\n")[1].split("\n</tools>")[0].splitlines()
    assert [json.loads(ln)["function"]["name"] for ln in lines] == ["add", "area"]


def test_history_calls_and_results_render_as_the_model_writes_them():
    call = ToolCall.model_validate({"id": "c1", "type": "function", "function": {"name": "add", "arguments": '{"a": 1}'}})
    assert call_text(call) == '<tool_call>\n{"name": "add", "arguments": {"a": 1}}\n</tool_call>'
    assert tool_response_text(["3", "4"]) == "<tool_response>\n3\n</tool_response>\n<tool_response>\n4\n</tool_response>"


def test_parse_auto_calls_keeps_the_text_around_them():
    answer = 'Let me add.\n<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n</tool_call>'
    parsed = parse_answer(answer, ["add"], forced=False)
    assert parsed.content == "Let me add."
    assert [(c.function.name, json.loads(c.function.arguments)) for c in parsed.calls] == [("add", {"a": 2, "b": 3})]
    assert parsed.calls[0].id.startswith("call_")


def test_parse_ignores_unknown_tools_and_malformed_calls():
    for answer in ('<tool_call>{"name": "nope", "arguments": {}}</tool_call>', "<tool_call>{not json</tool_call>",
                   '<tool_call>{"name": "add", "arguments": [1]}</tool_call>', "just text"):
        parsed = parse_answer(answer, ["add"], forced=False)
        assert parsed.calls == [] and parsed.content == answer


def test_parallel_false_keeps_one_call():
    two = '<tool_call>{"name": "add", "arguments": {}}</tool_call><tool_call>{"name": "area", "arguments": {}}</tool_call>'
    assert len(parse_answer(two, ["add", "area"], forced=False).calls) == 2
    assert len(parse_answer(two, ["add", "area"], forced=False, parallel=False).calls) == 1
    forced = '[{"name": "add", "arguments": {}}, {"name": "area", "arguments": {}}]'
    assert len(parse_answer(forced, ["add", "area"], forced=True, parallel=False).calls) == 1


def test_forced_answers_are_a_json_list_and_a_cut_one_stays_text():
    parsed = parse_answer('[{"name": "area", "arguments": {"shape": "circle"}}]', ["area"], forced=True)
    assert parsed.content is None and json.loads(parsed.calls[0].function.arguments) == {"shape": "circle"}
    cut = '[{"name": "area", "argu'
    assert parse_answer(cut, ["area"], forced=True).content == cut


def test_answer_schema_by_request():
    assert answer_schema(None, []) is None
    assert answer_schema(ResponseFormat(type="text"), []) is None
    assert answer_schema(ResponseFormat(type="json_object"), []) == {"type": "object"}
    fmt = ResponseFormat.model_validate({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "array"}}})
    assert answer_schema(fmt, []) == {"type": "array"}
    one = answer_schema(None, [ADD], parallel=False)
    assert one["maxItems"] == 1 and one["items"]["properties"]["name"] == {"const": "add"}
    both = answer_schema(None, [ADD, AREA])
    assert "maxItems" not in both and len(both["items"]["anyOf"]) == 2
    assert both["items"]["anyOf"][1]["properties"]["arguments"] == {"type": "object"}


def test_a_named_choice_or_parallel_false_asks_for_one_call():
    tools = [t.model_dump(exclude_none=True) for t in (ADD, AREA)]
    msgs = [{"role": "user", "content": "Q"}]
    single = [{"tool_choice": {"type": "function", "function": {"name": "add"}}},
              {"tool_choice": "required", "parallel_tool_calls": False}]
    for kw in single:
        assert not ChatCompletionRequest(model="m", messages=msgs, tools=tools, **kw).parallel_calls()
    assert ChatCompletionRequest(model="m", messages=msgs, tools=tools, tool_choice="required").parallel_calls()


@given(st.dictionaries(st.text(min_size=1, max_size=5), st.one_of(st.integers(), st.text(max_size=5)), max_size=3),
       st.text(max_size=20).filter(lambda t: "<tool_call>" not in t))
def test_any_arguments_round_trip_through_the_text_format(args, before):
    call = ToolCall.model_validate({"id": "c", "type": "function",
                                    "function": {"name": "add", "arguments": json.dumps(args)}})
    parsed = parse_answer(f"{before}{call_text(call)}", ["add"], forced=False)
    assert json.loads(parsed.calls[0].function.arguments) == args
    assert parsed.content == (before.strip() or None)


def _req(**kw):
    return ChatCompletionRequest.model_validate({"model": "m", "messages": [{"role": "user", "content": "hi"}], **kw})


TOOLS = [{"type": "function", "function": {"name": "add"}}]


@pytest.mark.parametrize("body, says", [
    ({"tool_choice": "required"}, "needs tools"),
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "mul"}}}, "not among the tools"),
    ({"tools": TOOLS * 2}, "unique"),
    ({"tools": [{"type": "function", "function": {"name": "bad name"}}]}, "pattern"),
    ({"tools": TOOLS, "tool_choice": "required", "response_format": {"type": "json_object"}}, "cannot also follow"),
    ({"response_format": {"type": "json_schema"}}, "needs 'json_schema'"),
    ({"response_format": {"type": "xml"}}, "json_object"),
    ({"chat_template_kwargs": {"foo": 1}}, "only enable_thinking"),
    ({"chat_template_kwargs": {"enable_thinking": "yes"}}, "true or false"),
    ({"top_k": -2}, "greater than or equal"),
    ({"min_p": 1.5}, "less than or equal"),
    ({"repetition_penalty": 0}, "greater than"),
])
def test_bad_tool_and_format_requests_say_what_is_wrong(body, says):
    with pytest.raises(ValidationError, match=says):
        _req(**body)


def test_tool_messages_must_answer_an_earlier_call():
    with pytest.raises(ValidationError, match="no earlier"):
        ChatCompletionRequest.model_validate({"model": "m", "messages": [
            {"role": "user", "content": "hi"}, {"role": "tool", "tool_call_id": "c9", "content": "3"}]})
    with pytest.raises(ValidationError, match="not JSON"):
        ChatCompletionRequest.model_validate({"model": "m", "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                                                  "function": {"name": "add", "arguments": "{"}}]}]})
