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
