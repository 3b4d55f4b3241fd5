"""The gateway in-process with a scripted engine: response shapes, streaming, logging, errors, auth."""

import json
import logging

import pytest

ADMIN = {"Authorization": "Bearer adm"}


def chat(client, messages=None, headers=None, **body):
    payload = {"model": "openvlthinker", "messages": messages if messages is not None else [{"role": "user", "content": "How many?"}], **body}
    return client.post("/v1/chat/completions", json=payload, headers=headers or {})


def sse_events(response):
    lines = [line[len("data: "):] for line in response.text.splitlines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(x) for x in lines[:-1]]


def test_image_chat_splits_thinking_and_logs_the_interaction(make_client, h):
    client = make_client(admin_key="adm")
    png = h.png_bytes()
    r = chat(client, h.image_message("How many circles?", png), metadata={"problem_type": "numerical",
                                                                         "reference_answer": "1"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"].startswith("chatcmpl-") and body["object"] == "chat.completion"
    msg = body["choices"][0]["message"]
    assert msg["content"] == "1" and msg["reasoning_content"] == msg["reasoning"] == "I see one red circle."
    assert body["model"] == "scripted-model" and body["adapter_version"] is None
    assert body["system_fingerprint"].startswith("fp_")
    assert body["usage"]["completion_tokens_details"]["reasoning_tokens"] > 0
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]

    sent = client.app.state.engine.requests[-1]
    assert sent.mode == "think" and sent.thinking_budget == 256
    text = sent.messages[0]["content"][-1]["text"]
    assert text.startswith("How many circles?\n") and "<thinking>" in text and "single number" in text
    assert sent.messages[0]["content"][0]["image"].size == (64, 64)

    page = client.get("/v1/interactions?gradable=true", headers=ADMIN).json()
    (item,) = page["data"]
    assert item["id"] == body["id"] and item["answer"] == "1" and item["thinking"] == "I see one red circle."
    assert item["metadata"]["reference_answer"] == "1" and item["gradable"] and item["budget"] == 256
    image_ref = item["request"]["messages"][0]["content"][0]
    assert image_ref["type"] == "image"
    got = client.get(f"/v1/images/{image_ref['sha256']}", headers=ADMIN)
    assert got.status_code == 200 and got.content == png and got.headers["content-type"] == "image/png"
    assert page["next_cursor"] == item["cursor"]


@pytest.mark.parametrize("question, tail", [
    ("Which shape is red?\nA. circle\nB. square", "option letter only"),
    ("Locate the red circle and give its bounding box.", "bounding box as JSON"),
    ("Describe the picture.", None),  # an open question keeps the plain instruction
])
def test_a_question_without_metadata_gets_the_tail_its_shape_asks_for(make_client, question, tail):
    client = make_client()
    assert chat(client, messages=[{"role": "user", "content": question}]).status_code == 200
    text = client.app.state.engine.requests[-1].messages[0]["content"][-1]["text"]
    end = text.split("</answer> tags", 1)[1]
    assert (tail in end) if tail else end.strip(" .") == "", text


def test_effort_none_is_direct_and_options_are_listed(make_client):
    client = make_client()
    r = chat(client, reasoning_effort="none",
             metadata={"problem_type": "multiple choice", "options": '["A. red", "B. blue"]'})
    assert r.status_code == 200
    sent = client.app.state.engine.requests[-1]
    assert sent.mode == "direct" and sent.thinking_budget == 0
    assert "A. red\nB. blue\nGive only the final answer" in sent.messages[0]["content"][-1]["text"]


def test_n_fans_out_with_distinct_seeds_and_logprobs(make_client):
    client = make_client()
    r = chat(client, n=3, seed=7, logprobs=True, top_logprobs=2, temperature=0.7)
    assert r.status_code == 200
    choices = r.json()["choices"]
    assert [c["index"] for c in choices] == [0, 1, 2]
    assert sorted(q.sampling.seed for q in client.app.state.engine.requests) == [7, 8, 9]
    content = choices[0]["logprobs"]["content"]
    assert content[0]["logprob"] == -0.25 and len(content[0]["top_logprobs"]) == 2
    assert "".join(t["token"] for t in content) == "<thinking>I see one red circle.</thinking>\n<answer>1</answer>"
    assert content[0]["bytes"] == list(content[0]["token"].encode())


def test_stream_sends_reasoning_then_content_then_done(make_client):
    client = make_client(admin_key="adm")
    r = chat(client, stream=True, stream_options={"include_usage": True})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r)
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    deltas = [e["choices"][0]["delta"] for e in events if e["choices"]]
    reasoning = "".join(d.get("reasoning_content", "") for d in deltas)
    content = "".join(d.get("content", "") for d in deltas)
    assert reasoning == "I see one red circle." and content == "1"
    assert not any("<" in (d.get("content", "") + d.get("reasoning_content", "")) for d in deltas)
    assert events[-2]["choices"][0]["finish_reason"] == "stop"
    assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] > 0
    assert len({e["id"] for e in events}) == 1
    stored = client.get(f"/v1/interactions/{events[0]['id']}", headers=ADMIN).json()["data"]
    assert stored[0]["stream"] and stored[0]["answer"] == "1"


def test_stream_with_n_2_interleaves_choices(make_client):
    client = make_client()
    events = sse_events(chat(client, stream=True, n=2))
    finals = [e["choices"][0]["index"] for e in events if e["choices"][0].get("finish_reason")]
    assert sorted(finals) == [0, 1]


def test_feedback_round_trip_and_errors(make_client):
    client = make_client(admin_key="adm")
    iid = chat(client).json()["id"]
    ok = client.post("/v1/feedback", json={"id": iid, "thumbs": "down", "correction": "2", "comment": "two"})
    assert ok.status_code == 200 and ok.json()["id"].startswith("fb-")
    assert client.post("/v1/feedback", json={"id": iid, "rating": 5}).status_code == 200
    assert client.post("/v1/feedback", json={"id": iid, "score": 0.25}).status_code == 200
    item = client.get(f"/v1/interactions/{iid}", headers=ADMIN).json()["data"][0]
    assert [f["thumbs"] for f in item["feedback"]] == ["down", None, None] and item["gradable"]
    feed = client.get("/v1/feedback?limit=2", headers=ADMIN).json()
    assert feed["has_more"] and feed["data"][0]["interaction"]["id"] == iid
    assert client.get(f"/v1/feedback?after={feed['next_cursor']}", headers=ADMIN).json()["data"][0]["score"] == 0.25
    assert client.get("/v1/feedback").status_code == 401  # reading feedback is admin-only
    unknown = client.post("/v1/feedback", json={"id": "chatcmpl-nope", "thumbs": "up"})
    assert unknown.status_code == 404 and unknown.json()["error"]["param"] == "id"
    for bad, param in [({"id": iid, "rating": 6}, "rating"), ({"id": iid, "score": 1.5}, "score"),
                       ({"id": iid, "thumbs": "sideways"}, "thumbs"), ({"id": iid}, None)]:
        r = client.post("/v1/feedback", json=bad)
        assert r.status_code == 400 and r.json()["error"]["param"] == param, (bad, r.text)
    assert client.post("/v1/feedback", json={"id": iid, "choice_index": 3, "thumbs": "up"}).status_code == 404


def test_default_valued_openai_parameters_are_accepted(make_client):
    """What clients send by default means what this server does anyway: no 400 for it."""
    client = make_client()
    r = chat(client, response_format={"type": "text"}, tool_choice="none", modalities=["text"], presence_penalty=0,
             frequency_penalty=0, logit_bias={}, reasoning_effort="minimal")
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("body, param, code", [
    ({"messages": []}, "messages", "invalid_value"),
    ({"temperature": 3}, "temperature", "invalid_value"),
    ({"n": 9}, "n", "invalid_value"),
    ({"max_tokens": 0}, "max_tokens", "invalid_value"),
    ({"max_tokens": 100000}, "max_tokens", "context_length_exceeded"),
    ({"max_completion_tokens": 100000}, "max_completion_tokens", "context_length_exceeded"),
    ({"top_logprobs": 2}, None, "invalid_value"),
    ({"tool_choice": "required"}, None, "invalid_value"),
    ({"tools": [{"type": "function", "function": {"name": "a b"}}]}, "tools[0].function.name", "invalid_value"),
    ({"response_format": {"type": "json_xml"}}, "response_format.type", "invalid_value"),
    ({"top_k": -3}, "top_k", "invalid_value"),
    ({"chat_template_kwargs": {"add_generation_prompt": False}}, "chat_template_kwargs", "invalid_value"),
    ({"modalities": ["text", "audio"]}, "modalities[1]", "invalid_value"),
    ({"presence_penalty": -2.5}, "presence_penalty", "invalid_value"),
    ({"logit_bias": {"-3": 1}}, "logit_bias", "invalid_value"),
    ({"logit_bias": {"3": 100.5}}, "logit_bias", "invalid_value"),
    ({"reasoning_effort": "extreme"}, "reasoning_effort", "invalid_value"),
    ({"stop": ["a"] * 5}, "stop", "invalid_value"),
    ({"metadata": {"problem_type": "poetry"}}, "metadata.problem_type", "invalid_value"),
    ({"metadata": {"options": "[1, 2"}}, "metadata.options", "invalid_value"),
    ({"metadata": {"k": 1}}, "metadata.k", "invalid_value"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role", "invalid_value"),
    ({"messages": [{"role": "system", "content": "be brief"}]}, "messages", "invalid_value"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@"}}]}]},
     "messages[0].content[0].image_url.url", "invalid_base64"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
     "messages[0].content[0].image_url.url", "invalid_value"),
    ({"messages": [{"role": "user", "content": [{"type": "audio"}]}]}, "messages[0].content[0].type", "invalid_value"),
    ({"messages": [{"role": "user", "content": [{"type": "text"}]}]}, "messages[0].content[0]", "invalid_value"),
    ({"seed": 2**64 + 5}, "seed", "invalid_value"),
    ({"stream_options": {"include_usage": 1.5}}, "stream_options.include_usage", "invalid_value"),
])
def test_bad_requests_are_400_naming_the_param(make_client, body, param, code):
    client = make_client()
    r = chat(client, **body) if "messages" not in body else chat(client, body.pop("messages"), **body)
    err = r.json()["error"]
    assert r.status_code == 400, r.text
    assert err["param"] == param and err["code"] == code and err["type"] == "invalid_request_error", err
    assert err["message"]


@pytest.mark.parametrize("fragment, param", [
    ('"messages": [{"role": "user", "content": "hi"}], "logit_bias": {"3": NaN}', "logit_bias"),
    ('"messages": [{"role": "user", "content": "\\ud800"}]', "messages[0].content"),
    ('"messages": [{"role": "user", "content": [{"type": "text", "text": "a\\udfff"}]}]', "messages[0].content[0].text"),
    ('"messages": [{"role": "user", "content": "hi"}], "stop": "\\ud800"', "stop"),
])
def test_lone_surrogates_and_nan_are_400_not_a_crash(make_client, fragment, param):
    body = '{"model": "openvlthinker", %s}' % fragment
    r = make_client().post("/v1/chat/completions", content=body.encode(), headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text


@pytest.mark.parametrize("content, content_type, got", [
    (b'{"model": "m"}', "text/plain", "a body that was not read as JSON"),
    (b"", "application/json", "an empty body"),
    (b"[1, 2]", "application/json", "an array"),
    (b"null", "application/json", "null"),
    (b'"hi"', "application/json", "a string"),
    (b"3.5", "application/json", "a number"),
])
def test_a_body_that_is_not_a_json_object_says_what_it_was(make_client, content, content_type, got):
    r = make_client().post("/v1/chat/completions", content=content, headers={"content-type": content_type})
    err = r.json()["error"]
    assert r.status_code == 400 and err["param"] is None, r.text
    assert err["message"] == ("The request body must be a JSON object, sent with Content-Type: application/json; "
                              f"got {got}.")


def test_other_bad_inputs(make_client, h):
    client = make_client(max_images=2, max_image_pixels=100 * 100)
    raw = client.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert raw.status_code == 400 and raw.json()["error"]["code"] == "invalid_json"
    png = h.png_bytes()
    assert chat(client, h.image_message("x", png, png, png)).json()["error"]["code"] == "too_many_images"
    big = chat(client, h.image_message("x", h.png_bytes(200, 200)))
    assert big.status_code == 400 and big.json()["error"]["code"] == "image_too_large"
    not_image = chat(client, h.image_message("x", b"GIF89a but not really"))
    assert not_image.status_code == 400 and not_image.json()["error"]["code"] == "invalid_image"
    unknown = chat(client, model="gpt-4o")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
    assert chat(client, model="openvlthinker@v0042").status_code == 404
    assert client.get("/v1/nothing").json()["error"]["code"] == "not_found"
    long_prompt = chat(client, [{"role": "user", "content": "word " * 600}])
    assert long_prompt.json()["error"]["code"] == "context_length_exceeded"


def test_auth(make_client):
    client = make_client(api_key="sk-1", admin_key="adm")
    assert chat(client).status_code == 401
    assert chat(client, headers={"Authorization": "Bearer wrong"}).json()["error"]["code"] == "invalid_api_key"
    assert chat(client, headers={"Authorization": "Bearer sk-1"}).status_code == 200
    assert client.get("/v1/models").status_code == 401
    assert client.get("/v1/adapters").status_code == 401
    assert client.get("/v1/adapters", headers={"Authorization": "Bearer sk-1"}).status_code == 401
    assert client.get("/v1/adapters", headers=ADMIN).status_code == 200
    assert client.get("/health").status_code == 200 and client.get("/metrics").status_code == 200
    closed = make_client()
    r = closed.get("/v1/interactions", headers=ADMIN)
    assert r.status_code == 403 and r.json()["error"]["code"] == "admin_disabled"
    assert closed.post("/v1/adapters/load", json={"version": "v0001"}).status_code == 403


def test_overload_is_503_with_retry_after(make_client, h):
    client = make_client(engine=h.Overloaded())
    for stream in (False, True):
        r = chat(client, stream=stream)
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert r.json()["error"]["type"] == "server_overloaded"


def test_unexpected_engine_bug_is_500_and_the_server_keeps_serving(make_client, caplog):
    client = make_client()
    client.app.state.engine.fail = ZeroDivisionError("bug")
    with caplog.at_level(logging.ERROR, logger="serve"):
        r = chat(client)
    assert r.status_code == 500 and r.json()["error"]["type"] == "server_error"
    rid = r.headers["x-request-id"]  # the id a user quotes finds the traceback
    assert rid.startswith("req_") and any(rid in rec.getMessage() and rec.exc_info for rec in caplog.records)
    client.app.state.engine.fail = None
    assert chat(client).status_code == 200


def test_error_in_the_middle_of_a_stream_is_reported_in_band(make_client, h):
    class Broken(h.ScriptedEngine):
        async def generate(self, request):
            n = 0
            async for item in super().generate(request):
                yield item
                n += 1
                if n == 2:
                    raise RuntimeError("engine crashed mid-stream")

    client = make_client(engine=Broken())
    lines = [line for line in chat(client, stream=True).text.splitlines() if line.startswith("data: ")]
    assert json.loads(lines[-1][6:])["error"]["code"] == "internal_error"  # no [DONE]: the SDK raises
    assert chat(client).status_code == 500
    client.app.state.engine.__class__ = h.ScriptedEngine
    assert chat(client).status_code == 200  # still serving


def test_models_health_metrics_openapi(make_client):
    client = make_client()
    ids = [m["id"] for m in client.get("/v1/models").json()["data"]]
    assert ids == ["scripted-model", "openvlthinker"]
    assert client.get("/health").json() == {"status": "ok", "engine_ready": True, "model": "scripted-model",
                                            "served_name": "openvlthinker", "promoted": None}
    chat(client)
    text = client.get("/metrics").text
    assert 'openvlthinker_http_requests_total{method="POST",route="/v1/chat/completions",status="200"} 1.0' in text
    assert 'openvlthinker_version_requests_total{version="base"} 1.0' in text
    assert "openvlthinker_engine_restarts" in text
    assert "openvlthinker_engine_queue_depth" in text and "openvlthinker_http_request_seconds_bucket" in text
    schema = client.get("/openapi.json").json()
    assert "/v1/chat/completions" in schema["paths"] and "ChatCompletionRequest" in schema["components"]["schemas"]


def test_request_body_cap_is_413(make_client):
    client = make_client(max_body_bytes=2000)
    big = chat(client, [{"role": "user", "content": "x" * 5000}])
    assert big.status_code == 413 and big.json()["error"]["code"] == "request_too_large"

    def chunks():
        for _ in range(10):
            yield b" " * 500

    chunked = client.post("/v1/chat/completions", content=chunks(), headers={"content-type": "application/json"})
    assert chunked.status_code == 413 and chunked.json()["error"]["code"] == "request_too_large"
    assert chat(client).status_code == 200


def test_engine_refusals_are_client_errors_not_500(make_client, h):
    from serve.engines.base import EngineError, EngineFailed, EngineUnavailable

    class Picky(h.ScriptedEngine):
        def count_prompt_tokens(self, messages, mode):
            raise EngineError("cannot apply the chat template to these messages")

    r = chat(make_client(engine=Picky()))
    assert r.status_code == 400 and r.json()["error"]["code"] == "engine_error"
    engine = h.ScriptedEngine()
    client = make_client(engine=engine)
    engine.fail = EngineUnavailable("engine stopped")
    r = chat(client)
    assert r.status_code == 503 and r.json()["error"]["code"] == "engine_unavailable"
    engine.fail = EngineFailed("generation failed: RuntimeError: boom")
    r = chat(client)
    assert r.status_code == 500 and r.json()["error"]["code"] == "engine_failed"


def test_messages_of_our_validators_read_as_our_sentences(make_client):
    """pydantic prefixes a validator's ValueError with 'Value error, '; the client gets the sentence alone."""
    client = make_client()
    r = client.post("/v1/feedback", json={"id": "chatcmpl-x"})
    assert r.json()["error"]["message"] == "give at least one of thumbs, rating, score or correction"
    r = client.post("/v1/chat/completions", json={"model": "scripted-model", "logit_bias": {"x": 1},
                                                  "messages": [{"role": "user", "content": "hi"}]})
    assert r.json()["error"]["message"].startswith("Invalid value for 'logit_bias': logit_bias keys are token ids")
