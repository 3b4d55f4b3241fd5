"""`POST /v1/responses` in process (ScriptedEngine): translation to the chat path, output items, the
event sequence of a stream, and bad input named by its Responses parameter. The official SDK against a
real server is in test_e2e.py."""

import json

import pytest

from serve.engines.base import EngineError

THOUGHT, ANSWER = "I see one red circle.", "1"


def create(client, **body):
    return client.post("/v1/responses", json={"model": "scripted-model", "input": "How many circles?", **body})


def events(response) -> list[tuple[str, dict]]:
    """(event name, data) pairs of an SSE body; each `event:` line must name its data's type."""
    out = []
    for block in response.text.strip().split("\n\n"):
        name, data = block.split("\n")
        assert name.startswith("event: ") and data.startswith("data: "), block
        payload = json.loads(data[6:])
        assert payload["type"] == name[7:]
        out.append((name[7:], payload))
    return out


def test_output_items_usage_and_echoed_fields(make_client):
    client = make_client()
    r = create(client, instructions="Answer briefly.", max_output_tokens=100, temperature=0.5,
               reasoning={"effort": "high", "summary": "auto"}, metadata={"problem_type": "numerical"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"].startswith("resp_") and body["object"] == "response" and body["status"] == "completed"
    reasoning, message = body["output"]
    suffix = body["id"].removeprefix("resp_")
    assert reasoning == {"type": "reasoning", "id": f"rs_{suffix}", "status": "completed",
                         "content": [{"type": "reasoning_text", "text": THOUGHT}],
                         "summary": [{"type": "summary_text", "text": THOUGHT}]}  # asked for: the thinking itself
    assert message["id"] == f"msg_{suffix}" and message["role"] == "assistant"
    assert message["content"] == [{"type": "output_text", "text": ANSWER, "annotations": [], "logprobs": None}]
    usage = body["usage"]
    assert usage["input_tokens"] == 4 and usage["output_tokens"] == usage["total_tokens"] - 4
    assert usage["output_tokens_details"]["reasoning_tokens"] > 0
    assert body["instructions"] == "Answer briefly." and body["max_output_tokens"] == 100
    assert body["temperature"] == 0.5 and body["reasoning"] == {"effort": "high", "summary": "auto"}
    assert body["metadata"] == {"problem_type": "numerical"} and body["store"] is True

    (request,) = client.app.state.engine.requests  # one chat request went to the engine
    assert request.messages[0] == {"role": "system", "content": [{"type": "text", "text": "Answer briefly."}]}
    assert request.messages[1]["content"][0]["text"].startswith("How many circles?")
    assert request.sampling.max_tokens == 100 and request.sampling.temperature == 0.5
    assert request.mode == "think" and request.thinking_budget == 1024  # effort high


def test_interaction_is_stored_under_the_response_id_and_takes_feedback(make_client):
    client = make_client()
    rid = create(client).json()["id"]
    assert client.post("/v1/feedback", json={"id": rid, "thumbs": "up"}).status_code == 200
    kept = create(client, store=False).json()["id"]
    r = client.post("/v1/feedback", json={"id": kept, "thumbs": "up"})
    assert r.status_code == 404 and "store: false" in r.json()["error"]["message"]


def test_conversation_sent_back_with_earlier_output_items(make_client, h):
    client = make_client()
    first = create(client, input=[{"role": "user", "content": [
        {"type": "input_image", "image_url": h.data_url(h.png_bytes())},
        {"type": "input_text", "text": "How many circles?"}]}]).json()
    follow = [{"role": "user", "content": [{"type": "input_image", "image_url": h.data_url(h.png_bytes())},
                                           {"type": "input_text", "text": "How many circles?"}]},
              *first["output"], {"role": "user", "content": "And squares?"}]
    r = create(client, input=follow)
    assert r.status_code == 200, r.text
    messages = client.app.state.engine.requests[-1].messages
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]  # the reasoning item is skipped
    assert messages[0]["content"][0]["type"] == "image"
    assert messages[1]["content"] == [{"type": "text", "text": ANSWER}]


def test_previous_response_id_continues_the_stored_conversation(make_client, h):
    client = make_client()
    png = h.png_bytes(color="blue")
    first = create(client, instructions="Be brief.", input=[{"role": "user", "content": [
        {"type": "input_image", "image_url": h.data_url(png)}, {"type": "input_text", "text": "How many circles?"}]}])
    second = create(client, previous_response_id=first.json()["id"], input="And squares?",
                    instructions="Answer in digits.")
    assert second.status_code == 200, second.text
    assert second.json()["previous_response_id"] == first.json()["id"]
    messages = client.app.state.engine.requests[-1].messages
    # The new instructions replace the old ones (as OpenAI does); the image comes back from the store.
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[0]["content"] == [{"type": "text", "text": "Answer in digits."}]
    image = messages[1]["content"][0]["image"]
    assert image.size == (64, 64) and image.getpixel((24, 24))[2] > 200  # the blue circle
    assert messages[2]["content"] == [{"type": "text", "text": ANSWER}]
    assert messages[3]["content"][0]["text"].startswith("And squares?")
    third = create(client, previous_response_id=second.json()["id"], input="Thanks.")
    roles = [m["role"] for m in client.app.state.engine.requests[-1].messages]
    assert third.status_code == 200 and roles == ["user", "assistant", "user", "assistant", "user"]  # chains

    private = create(client, store=False).json()["id"]
    r = create(client, previous_response_id=private)
    assert r.status_code == 404 and "store: false" in r.json()["error"]["message"]


def test_retrieve_gives_the_stored_response(make_client):
    client = make_client()
    made = create(client, instructions="Be brief.", max_output_tokens=50, metadata={"k": "v"},
                  reasoning={"summary": "auto"}).json()
    got = client.get(f"/v1/responses/{made['id']}")
    assert got.status_code == 200, got.text
    same = {k: v for k, v in got.json().items() if k not in ("created_at", "completed_at")}
    assert same == {k: v for k, v in made.items() if k not in ("created_at", "completed_at")}
    assert client.get("/v1/responses/resp_unknown").status_code == 404
    chat = client.post("/v1/chat/completions", json={"model": "scripted-model",
                                                     "messages": [{"role": "user", "content": "Hi"}]}).json()
    assert client.get(f"/v1/responses/{chat['id']}").status_code == 404  # a chat completion is not a response


def test_input_items_list_the_responses_own_input_in_pages(make_client, h):
    client = make_client()
    png = h.png_bytes(color="blue")
    first = create(client, instructions="Be brief.", input="Hello.").json()
    sent = [{"role": "user", "content": [{"type": "input_image", "image_url": h.data_url(png)},
                                         {"type": "input_text", "text": "How many circles?"}]},
            {"role": "assistant", "content": [{"type": "output_text", "text": "2"}]},
            {"role": "developer", "content": "Digits only."},
            {"type": "reasoning", "summary": []},  # sent back, skipped: not an input message
            {"role": "user", "content": "And squares?"}]
    rid = create(client, instructions="Answer in digits.", previous_response_id=first["id"], input=sent).json()["id"]
    r = client.get(f"/v1/responses/{rid}/input_items", params={"order": "asc"})
    assert r.status_code == 200, r.text
    page = r.json()
    # Neither the instructions nor the conversation that previous_response_id put first.
    assert [(item["role"], item["type"]) for item in page["data"]] == [
        ("user", "message"), ("assistant", "message"), ("developer", "message"), ("user", "message")]
    image, text = page["data"][0]["content"]
    assert image["type"] == "input_image" and image["image_url"] == h.data_url(png)  # read back from the store
    assert text == {"type": "input_text", "text": "How many circles?"}
    assert page["data"][1]["content"][0]["text"] == "2" and page["data"][3]["content"][0]["text"] == "And squares?"
    ids = [item["id"] for item in page["data"]]
    assert len(set(ids)) == 4 and page["first_id"] == ids[0] and page["last_id"] == ids[-1]
    assert page["has_more"] is False and page["object"] == "list"

    newest = client.get(f"/v1/responses/{rid}/input_items", params={"limit": 3}).json()  # default order: desc
    assert [item["id"] for item in newest["data"]] == ids[::-1][:3] and newest["has_more"] is True
    rest = client.get(f"/v1/responses/{rid}/input_items", params={"limit": 3, "after": newest["last_id"]}).json()
    assert [item["id"] for item in rest["data"]] == ids[:1] and rest["has_more"] is False
    one = client.get(f"/v1/responses/{first['id']}/input_items").json()["data"]
    assert [part["text"] for part in one[0]["content"]] == ["Hello."]

    for params, param in (({"limit": 0}, "limit"), ({"limit": 101}, "limit"), ({"order": "up"}, "order"),
                          ({"after": "msg_other"}, "after")):
        r = client.get(f"/v1/responses/{rid}/input_items", params=params)
        assert r.status_code == 400 and r.json()["error"]["param"] == param, (params, r.text)
    assert client.get("/v1/responses/resp_unknown/input_items").status_code == 404


def test_input_tokens_count_what_create_would_be_answered_with(make_client, h):
    client = make_client()

    def count(**body):
        r = client.post("/v1/responses/input_tokens", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["object"] == "response.input_tokens"
        return r.json()["input_tokens"]

    image = [{"role": "user", "content": [{"type": "input_image", "image_url": h.data_url(h.png_bytes())},
                                          {"type": "input_text", "text": "How many circles?"}]}]
    # The scripted engine's usage is made up; the e2e test compares the count with a real answer's usage.
    first = create(client, input=image, instructions="Be brief.").json()
    with_image = count(model="scripted-model", input=image, instructions="Be brief.")
    assert count(input="How many circles?", instructions="Be brief.") < with_image  # model left out: the served one
    # The stored conversation comes before the input.
    assert count(previous_response_id=first["id"], input="And squares?") > count(input="And squares?")
    assert len(client.app.state.engine.requests) == 1 and client.app.state.store.count() == 1  # counting answers nothing

    for body, status, param in (({"model": "nope", "input": "Hi"}, 404, "model"),
                                ({"input": [{"role": "user", "content": [{"type": "input_image",
                                                                          "image_url": "data:image/png;base64,AAAA"}]}]},
                                 400, "input[0].content[0].image_url"),
                                ({"previous_response_id": "resp_unknown", "input": "Hi"}, 404, "previous_response_id"),
                                ({"input": ""}, 400, "input")):
        r = client.post("/v1/responses/input_tokens", json=body)
        assert r.status_code == status and r.json()["error"]["param"] == param, (body, r.text)


def test_delete_removes_the_response_and_its_feedback(make_client):
    client = make_client()
    kept, gone = create(client).json()["id"], create(client).json()["id"]
    assert client.post("/v1/feedback", json={"id": gone, "thumbs": "down"}).status_code == 200
    r = client.delete(f"/v1/responses/{gone}")
    assert r.status_code == 200 and r.json() == {"id": gone, "object": "response", "deleted": True}
    store = client.app.state.store
    assert store.get_interaction(gone) == [] and store.list_feedback()[0] == []  # the RL loop sees neither
    assert client.get(f"/v1/responses/{gone}").status_code == 404
    r = create(client, previous_response_id=gone)
    assert r.status_code == 404 and r.json()["error"]["param"] == "previous_response_id"
    again = client.delete(f"/v1/responses/{gone}")
    assert again.status_code == 404 and again.json()["error"]["code"] == "response_not_found"
    assert client.get(f"/v1/responses/{kept}").status_code == 200  # the other one stays
    chat = client.post("/v1/chat/completions", json={"model": "scripted-model",
                                                     "messages": [{"role": "user", "content": "Hi"}]}).json()
    assert client.delete(f"/v1/responses/{chat['id']}").status_code == 404  # not a response: not deleted here
    assert len(store.get_interaction(chat["id"])) == 1


def test_length_cut_is_incomplete(make_client):
    body = create(make_client(), max_output_tokens=6).json()  # cut inside the thinking
    assert body["status"] == "incomplete" and body["incomplete_details"] == {"reason": "max_output_tokens"}
    assert [(item["type"], item["status"]) for item in body["output"]] == [("reasoning", "incomplete"),
                                                                          ("message", "incomplete")]


def test_logprobs_are_included_when_asked(make_client):
    body = create(make_client(), include=["message.output_text.logprobs"], top_logprobs=2).json()
    logprobs = body["output"][-1]["content"][0]["logprobs"]
    assert logprobs and all(lp["logprob"] == -0.25 and len(lp["top_logprobs"]) == 2 for lp in logprobs)


def test_stream_events_rebuild_the_response(make_client):
    client = make_client()
    with_stream = events(create(client, stream=True))
    names = [name for name, _ in with_stream]
    assert names[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert names[-1] == "response.completed"
    assert [data["sequence_number"] for _, data in with_stream] == list(range(len(with_stream)))
    thinking = "".join(d["delta"] for n, d in with_stream if n == "response.reasoning_text.delta")
    answer = "".join(d["delta"] for n, d in with_stream if n == "response.output_text.delta")
    assert thinking == THOUGHT and answer == ANSWER
    done = [d["item"] for n, d in with_stream if n == "response.output_item.done"]
    final = with_stream[-1][1]["response"]
    assert final["status"] == "completed" and final["output"] == done and final["usage"]["output_tokens"] > 0
    assert names.index("response.reasoning_text.done") < names.index("response.output_text.delta")
    plain = create(client).json()  # the same greedy script: the same items, ids aside
    strip = lambda items: [{k: v for k, v in item.items() if k != "id"} for item in items]  # noqa: E731
    assert strip(final["output"]) == strip(plain["output"])


def test_stream_without_thinking_and_cut_short(make_client, h):
    client = make_client(engine=h.ScriptedEngine(script="<answer>12345678</answer>"))
    got = events(create(client, stream=True, max_output_tokens=3, reasoning={"effort": "none"}))
    assert "response.reasoning_text.delta" not in [n for n, _ in got]
    name, data = got[-1]
    assert name == "response.incomplete" and data["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert [item["type"] for item in data["response"]["output"]] == ["message"]


def test_error_in_the_middle_of_a_stream_is_an_error_event(make_client, h):
    class Broken(h.ScriptedEngine):
        async def generate(self, request):
            async for item in super().generate(request):
                yield item
                raise EngineError("the adapter went away")

    got = events(create(make_client(engine=Broken()), stream=True))
    (name, error), (last, failed) = got[-2:]
    assert name == "error" and "adapter went away" in error["message"]
    assert last == "response.failed" and failed["response"]["status"] == "failed"
    assert failed["response"]["error"]["message"] == error["message"]


@pytest.mark.parametrize("body, param, words", [
    ({"input": ""}, "input", "non-empty"),
    ({"input": []}, "input", "non-empty"),
    ({"tools": [{"type": "web_search"}]}, "tools[0]", "only function tools"),
    ({"tools": [{"type": "function", "name": "f", "parameters": {"type": 3}}]}, "tools[0].parameters", "schema"),
    ({"tools": [{"type": "function", "name": "f"}], "tool_choice": {"type": "function", "name": "g"}},
     "tool_choice", "not among the tools"),
    ({"previous_response_id": "resp_1"}, "previous_response_id", "No stored response"),
    ({"previous_response_id": "chatcmpl-1"}, "previous_response_id", "No stored response"),
    ({"text": {"format": {"type": "json_schema"}}}, "text.format", "needs 'name' and 'schema'"),
    ({"text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "objectx"}}}},
     "text.format.schema", "objectx"),
    ({"include": ["reasoning.encrypted_content"]}, "include", "only"),
    ({"background": True}, "background", "False"),
    ({"truncation": "auto"}, "truncation", "disabled"),
    ({"reasoning": {"effort": "huge"}}, "reasoning.effort", "'auto'"),
    ({"conversation": "conv_1"}, "conversation", "not accepted"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
     "input[0].content[0].type", "input_text"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file_1"}]}]},
     "input[0].content[0]", "no Files API"),
    ({"input": [{"role": "user", "content": [{"type": "output_text", "text": "x"}]}]}, "input[0]", "input_text"),
    ({"input": [{"content": "hi"}]}, "input[0]", "role"),
    ({"input": [{"type": "function_call_output", "call_id": "c", "output": "x"}]}, "input[0].call_id", "no earlier"),
    ({"input": [{"type": "function_call", "call_id": "c", "name": "f"}]}, "input[0]", "'arguments'"),
    ({"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "[1]"}]}, "input[0]", "JSON object"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "data:image/png;base64,%%"}]}]},
     "input[0].content[0].image_url", "base64"),
    ({"instructions": "Be brief.", "input": [{"type": "reasoning", "summary": []},
                                             {"role": "assistant", "content": "hi"}]}, "input", "user message"),
    ({"max_output_tokens": 10**6}, "max_output_tokens", "context"),
    ({"model": "nope"}, "model", "nope"),
])
def test_bad_input_names_the_responses_parameter(make_client, body, param, words):
    client = make_client()
    r = create(client, **body)
    assert 400 <= r.status_code < 500, r.text
    error = r.json()["error"]
    assert error["param"] == param and words in error["message"], error
    assert create(client).status_code == 200  # still serving


def test_openapi_schema_and_metrics_name_the_route(make_client):
    client = make_client()
    create(client)
    schema = client.get("/openapi.json").json()
    assert "/v1/responses" in schema["paths"] and "ResponsesRequest" in schema["components"]["schemas"]
    assert 'route="/v1/responses",status="200"} 1.0' in client.get("/metrics").text


# ------------------------------------------------------------------------ function calls, text.format

TOOL = {"type": "function", "name": "count", "description": "Count one shape",
        "parameters": {"type": "object", "properties": {"shape": {"type": "string"}}}}
CALLING = ('<thinking>I need the count.</thinking><answer>Checking.\n<tool_call>\n'
           '{"name": "count", "arguments": {"shape": "circle"}}\n</tool_call></answer>')


def test_tools_and_text_format_become_chat_parameters(make_client, h):
    client = make_client(h.ScriptedEngine(CALLING))
    body = create(client, tools=[TOOL], parallel_tool_calls=False).json()
    reasoning, message, call = body["output"]
    suffix = body["id"].removeprefix("resp_")
    assert message["content"][0]["text"] == "Checking."
    assert call == {"type": "function_call", "id": f"fc_{suffix}_0", "call_id": f"call_{suffix}_0", "name": "count",
                    "arguments": '{"shape": "circle"}', "status": "completed"}
    assert body["tools"] == [TOOL] and body["parallel_tool_calls"] is False and body["tool_choice"] == "auto"
    sent = client.app.state.engine.requests[-1]
    assert "<tools>" in sent.messages[0]["content"][0]["text"] and sent.answer_schema is None

    create(client, tools=[TOOL], tool_choice={"type": "function", "name": "count"})
    forced = json.loads(client.app.state.engine.requests[-1].answer_schema)
    assert forced["maxItems"] == 1 and forced["items"]["properties"]["name"] == {"const": "count"}
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    fmt = create(client, text={"format": {"type": "json_schema", "name": "n", "schema": schema, "strict": True}})
    assert fmt.json()["text"] == {"format": {"type": "json_schema", "name": "n", "schema": schema, "strict": True}}
    assert json.loads(client.app.state.engine.requests[-1].answer_schema) == schema
    create(client, text={"format": {"type": "json_object"}})
    assert json.loads(client.app.state.engine.requests[-1].answer_schema) == {"type": "object"}


def test_a_stored_call_keeps_its_id_and_its_output_continues_the_conversation(make_client, h):
    client = make_client(h.ScriptedEngine(CALLING))
    first = create(client, tools=[TOOL]).json()
    call = first["output"][-1]
    assert client.get(f"/v1/responses/{first['id']}").json()["output"] == first["output"]  # ids derived, not random
    result = {"type": "function_call_output", "call_id": call["call_id"], "output": "3"}
    second = create(client, tools=[TOOL], previous_response_id=first["id"], input=[result])
    assert second.status_code == 200, second.text
    sent = client.app.state.engine.requests[-1].messages
    assert any("<tool_call>" in p["text"] for m in sent if m["role"] == "assistant" for p in m["content"])
    assert "<tool_response>\n3\n</tool_response>" in sent[-1]["content"][0]["text"]
    # The same turn sent back as input items instead of by id; input_items lists what was sent.
    items = [{"role": "user", "content": "How many circles?"}, *first["output"], result]
    third = create(client, tools=[TOOL], input=items).json()
    listed = client.get(f"/v1/responses/{third['id']}/input_items", params={"order": "asc"}).json()["data"]
    assert [i["type"] for i in listed] == ["message", "message", "function_call", "function_call_output"]
    assert listed[2]["call_id"] == call["call_id"] and listed[3]["output"] == "3"


def test_a_streamed_call_arrives_as_function_call_events(make_client, h):
    client = make_client(h.ScriptedEngine('<answer>[{"name": "count", "arguments": {"shape": "square"}}]</answer>'))
    got = events(create(client, tools=[TOOL], tool_choice="required", stream=True, reasoning={"effort": "none"}))
    names = [name for name, _ in got]
    assert "response.output_text.delta" not in names  # the answer is only a call: no message item
    added, delta, done, item_done = (data for name, data in got if "function_call" in name or
                                     (name.startswith("response.output_item") and data["item"]["type"] == "function_call"))
    assert added["item"]["status"] == "in_progress" and delta["delta"] == '{"shape": "square"}'
    assert done["arguments"] == delta["delta"] and done["name"] == "count"
    final = got[-1][1]["response"]
    assert got[-1][0] == "response.completed" and final["output"] == [item_done["item"]]
    assert final["output"][0]["call_id"] == f"call_{final['id'].removeprefix('resp_')}_0"
