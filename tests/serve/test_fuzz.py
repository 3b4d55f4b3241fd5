"""Whatever JSON a client sends, the gateway answers 2xx or 4xx in the error shape, never 5xx."""

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=False), st.text(max_size=12))
anything = st.recursive(scalars, lambda ch: st.one_of(st.lists(ch, max_size=3), st.dictionaries(st.text(max_size=8), ch, max_size=3)),
                        max_leaves=6)
part = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=20)}),
    st.fixed_dictionaries({"type": st.just("image_url"), "image_url": st.fixed_dictionaries(
        {"url": st.sampled_from(["data:image/png;base64,AAAA", "data:,", "x", "http://127.0.0.1:1/x"])})}),
    anything)
message = st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", "developer", "tool"]),
                                 "content": st.one_of(st.text(max_size=20), st.lists(part, max_size=3), st.none(), anything)})
body = st.fixed_dictionaries(
    {"model": st.sampled_from(["openvlthinker", "scripted-model", "openvlthinker@v1", "x"]),
     "messages": st.one_of(st.lists(message, max_size=3), anything)},
    optional={"n": st.integers(-2, 12), "max_tokens": st.one_of(st.integers(-5, 5000), anything),
              "temperature": st.one_of(st.floats(-1, 3), anything), "top_p": st.floats(-0.5, 1.5),
              "stop": st.one_of(st.text(max_size=3), st.lists(st.text(max_size=3), max_size=5), anything),
              "seed": st.integers(-2**65, 2**65), "logprobs": st.booleans(), "top_logprobs": st.integers(-1, 25),
              "stream": st.booleans(), "reasoning_effort": st.sampled_from(["none", "low", "auto", "max"]),
              "metadata": st.one_of(st.dictionaries(st.sampled_from(["problem_type", "options", "reference_answer"]),
                                                    st.sampled_from(["numerical", "OCR", '["A"]', "[1]", "x"])), anything),
              "extra": anything})


def test_random_requests_never_get_a_5xx(make_client):
    client = make_client(admin_key="adm")

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(body)
    def check(payload):
        r = client.post("/v1/chat/completions", content=json.dumps(payload),
                        headers={"content-type": "application/json"})
        assert r.status_code < 500, (payload, r.text)
        if r.status_code >= 400:
            assert set(r.json()["error"]) == {"message", "type", "param", "code"}
        elif payload.get("stream") is True:
            assert r.text.rstrip().endswith("data: [DONE]"), r.text[-300:]

    check()


input_part = st.one_of(
    st.fixed_dictionaries({"type": st.sampled_from(["input_text", "output_text"]), "text": st.text(max_size=20)}),
    st.fixed_dictionaries({"type": st.just("input_image"), "image_url": st.sampled_from(
        ["data:image/png;base64,AAAA", "data:,", "x", "http://127.0.0.1:1/x"])}),
    anything)
item = st.one_of(
    st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", "developer", "tool"]),
                           "content": st.one_of(st.text(max_size=20), st.lists(input_part, max_size=3), anything)},
                          optional={"type": st.sampled_from(["message", "reasoning", "function_call"])}),
    anything)
noisy_response = st.fixed_dictionaries(
    {"model": st.sampled_from(["openvlthinker", "scripted-model", "x"]),
     "input": st.one_of(st.text(max_size=20), st.lists(item, max_size=3), anything)},
    optional={"instructions": st.one_of(st.text(max_size=10), anything),
              "max_output_tokens": st.one_of(st.integers(-5, 5000), anything),
              "temperature": st.one_of(st.floats(-1, 3), anything), "stream": st.booleans(),
              "reasoning": st.one_of(st.fixed_dictionaries({"effort": st.sampled_from(["none", "low", "xhigh", "x"])}),
                                     anything),
              "previous_response_id": st.one_of(st.sampled_from(["resp_x", "chatcmpl-1", ""]), anything),
              "include": st.one_of(st.just(["message.output_text.logprobs"]), anything),
              "top_logprobs": st.integers(-1, 25), "store": st.booleans(), "tools": anything, "text": anything})
# Well-formed requests with odd values, so that streams and stored conversations are exercised too.
clean_message = st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "developer"]), "content": st.one_of(
    st.text(min_size=1, max_size=20), st.lists(st.fixed_dictionaries({"type": st.just("input_text"),
                                                                     "text": st.text(max_size=20)}), min_size=1))})
clean_response = st.fixed_dictionaries(
    {"model": st.just("openvlthinker"),
     "input": st.one_of(st.text(min_size=1, max_size=20), st.lists(clean_message, min_size=1, max_size=3))},
    optional={"instructions": st.text(max_size=10), "max_output_tokens": st.integers(1, 40),
              "temperature": st.floats(0, 2), "stream": st.booleans(),
              "reasoning": st.fixed_dictionaries({"effort": st.sampled_from(["none", "low", "xhigh", "auto"])}),
              "include": st.just(["message.output_text.logprobs"]), "top_logprobs": st.integers(0, 20),
              "store": st.booleans(), "metadata": st.dictionaries(st.text(min_size=1, max_size=8),
                                                                   st.text(max_size=8), max_size=3)})
response_body = st.one_of(noisy_response, clean_response)
# What is then asked about an answered response: a page of its input items, and maybe its deletion.
items_query = st.fixed_dictionaries({}, optional={
    "limit": st.one_of(st.integers(-2, 200), st.text(max_size=4)), "order": st.sampled_from(["asc", "desc", "x"]),
    "after": st.text(max_size=12), "include": st.text(max_size=8)})


def test_random_responses_requests_never_get_a_5xx(make_client):
    client = make_client(admin_key="adm")

    def answered_ok(r, what):
        assert r.status_code < 500, (what, r.text)
        if r.status_code >= 400:
            assert set(r.json()["error"]) == {"message", "type", "param", "code"}

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(response_body, items_query, st.booleans())
    def check(payload, query, delete):
        r = client.post("/v1/responses", content=json.dumps(payload), headers={"content-type": "application/json"})
        answered_ok(r, payload)
        if r.status_code >= 400:
            return
        if payload.get("stream") is True:
            last = r.text.rstrip().rsplit("\n\n", 1)[-1]
            assert last.startswith(("event: response.completed", "event: response.incomplete")), r.text[-300:]
            return
        assert r.json()["object"] == "response"
        rid = r.json()["id"]
        answered_ok(client.get(f"/v1/responses/{rid}/input_items", params=query), query)
        if delete:
            answered_ok(client.delete(f"/v1/responses/{rid}"), "delete")

    check()


stored_query = st.dictionaries(
    st.one_of(st.sampled_from(["after", "limit", "order", "model"]), st.text(max_size=6).map(lambda k: f"metadata[{k}]")),
    st.one_of(st.text(max_size=12), st.integers(-5, 500).map(str), st.sampled_from(["asc", "desc", "chatcmpl-x"])),
    max_size=4)


def test_random_stored_completion_queries_never_get_a_5xx(make_client):
    client = make_client()
    ids = [client.post("/v1/chat/completions", json={"model": "scripted-model", "metadata": {"k": str(i)},
                                                     "messages": [{"role": "user", "content": "Hi"}]}).json()["id"]
           for i in range(3)]

    @settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
    @given(stored_query, st.sampled_from([*ids, "chatcmpl-unknown", "resp_x", "%2F..", "x" * 300]))
    def check(query, some_id):
        for r in (client.get("/v1/chat/completions", params=query),
                  client.get(f"/v1/chat/completions/{some_id}/messages", params=query),
                  client.get(f"/v1/chat/completions/{some_id}")):
            assert r.status_code < 500, (query, some_id, r.text)
            if r.status_code >= 400:
                assert set(r.json()["error"]) == {"message", "type", "param", "code"}

    check()
