"""End to end: a real `openvlthinker serve` process (TransformersEngine, tiny random Qwen3-VL) driven
by the official `openai` SDK: images, streaming, n, logprobs, reasoning, metadata, feedback, export,
adapter hot swap under load, bad inputs, auth, overload and crash durability.
"""

import threading
import time

import httpx
import openai
import pytest

API, ADMIN = "sk-test", "adm-test"
ADMIN_H = {"Authorization": f"Bearer {ADMIN}"}
THINK = [{"role": "assistant", "content": "<thinking>"}]  # prefilled: the engine continues inside the block


@pytest.fixture(scope="module")
def adapters_dir(tmp_path_factory, tiny_model, h):
    root = tmp_path_factory.mktemp("e2e-adapters")
    h.write_adapter(tiny_model, root / "policy-v0001", seed=1, metrics={"reward": 0.4})
    h.write_adapter(tiny_model, root / "policy-v0002", seed=2, parent="v0001", metrics={"reward": 0.5})
    return root


@pytest.fixture(scope="module")
def server(start_server, adapters_dir):
    return start_server("--api-key", API, "--admin-key", ADMIN, "--adapters-dir", str(adapters_dir), "--max-batch", "4")


@pytest.fixture(scope="module")
def client(server):
    return server.client(API, max_retries=0, timeout=60)


def admin(server, method, path, **kw):
    return httpx.request(method, f"{server.url}/v1{path}", headers=ADMIN_H, timeout=60, **kw)


def test_image_chat(client, h):
    png = h.png_bytes(96, 64)
    r = client.chat.completions.create(model="openvlthinker", messages=h.image_message("How many circles?", png),
                                       max_tokens=16, temperature=0)
    assert r.id.startswith("chatcmpl-") and r.object == "chat.completion" and r.model == "model"
    assert r.adapter_version is None and r.system_fingerprint.startswith("fp_")
    choice = r.choices[0]
    assert isinstance(choice.message.content, str) and choice.finish_reason in ("stop", "length")
    assert 1 <= r.usage.completion_tokens <= 16 and r.usage.prompt_tokens > 16  # the image's tokens are counted
    again = client.chat.completions.create(model="openvlthinker", messages=h.image_message("How many circles?", png),
                                           max_tokens=16, temperature=0)
    assert again.choices[0].message.content == choice.message.content  # greedy is deterministic
    assert r._request_id.startswith("req_") and again._request_id != r._request_id  # as OpenAI's x-request-id


def test_stored_completions_through_the_sdk(client, h):
    png = h.png_bytes(96, 64)
    made = client.chat.completions.create(model="openvlthinker", messages=h.image_message("How many circles?", png),
                                          max_tokens=12, temperature=0, n=2, metadata={"e2e": "stored"})
    got = client.chat.completions.retrieve(made.id)
    assert got.model_dump() == made.model_dump()  # the same object, both choices, as answered
    listed = client.chat.completions.list(metadata={"e2e": "stored"})  # the SDK's cursor page
    assert [c.id for c in listed] == [made.id]
    (asked,) = client.chat.completions.messages.list(made.id)
    assert asked.content == "How many circles?" and asked.content_parts[0].image_url.url == h.data_url(png)
    client.chat.completions.delete(made.id)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.retrieve(made.id)
    assert list(client.chat.completions.list(metadata={"e2e": "stored"})) == []


def test_two_images(client, h):
    r = client.chat.completions.create(
        model="model", messages=h.image_message("Which is bigger?", h.png_bytes(), h.png_bytes(128, 96, "blue")),
        max_tokens=8)
    assert r.usage.prompt_tokens > 30 and r.choices[0].finish_reason in ("stop", "length")


def test_reasoning_fields_and_stream_agree(client):
    kw = dict(model="openvlthinker", messages=[{"role": "user", "content": "How many squares?"}, *THINK],
              max_tokens=90, temperature=0, reasoning_effort="low")  # budget 64: the engine closes the block
    r = client.chat.completions.create(**kw)
    msg = r.choices[0].message
    assert msg.reasoning_content and msg.reasoning == msg.reasoning_content
    assert "<thinking>" not in msg.reasoning_content and "</thinking>" not in (msg.content or "")
    assert r.usage.completion_tokens_details.reasoning_tokens == 65  # 64 + the forced </thinking>

    chunks = list(client.chat.completions.create(stream=True, **kw))
    assert {c.id for c in chunks} == {chunks[0].id} and chunks[0].object == "chat.completion.chunk"
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    reasoning = "".join(getattr(d, "reasoning_content", None) or "" for d in deltas)
    content = "".join(d.content or "" for d in deltas)
    assert reasoning == msg.reasoning_content and content == msg.content
    assert chunks[-1].choices[0].finish_reason == r.choices[0].finish_reason


def test_stream_plain(client, h):
    stream = client.chat.completions.create(model="openvlthinker", messages=h.image_message("Describe.", h.png_bytes()),
                                            max_tokens=12, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].usage.completion_tokens <= 12 and chunks[-1].choices == []
    assert chunks[-2].choices[0].finish_reason in ("stop", "length")


def test_n_and_logprobs(client):
    r = client.chat.completions.create(model="openvlthinker", messages=[{"role": "user", "content": "Count."}],
                                       n=3, max_tokens=6, temperature=1.0, seed=3, logprobs=True, top_logprobs=3)
    assert [c.index for c in r.choices] == [0, 1, 2]
    for c in r.choices:
        tokens = c.logprobs.content
        assert 1 <= len(tokens) <= 6 and all(t.logprob <= 0 and len(t.top_logprobs) == 3 for t in tokens)
    assert r.usage.completion_tokens == sum(len(c.logprobs.content) for c in r.choices)


def test_logit_bias_and_penalties(client, tiny_model):
    from openvlthinker.models import load_processor

    tokenizer = load_processor(tiny_model).tokenizer
    (red,), (blue,) = (tokenizer.encode(w, add_special_tokens=False) for w in (" red", " blue"))

    def tokens(**kw):
        r = client.chat.completions.create(model="openvlthinker", messages=[{"role": "user", "content": "Colour?"}],
                                           max_tokens=4, temperature=0, reasoning_effort="none", logprobs=True, **kw)
        return [t.token for t in r.choices[0].logprobs.content]

    bias = {str(red): 100, str(blue): 97}  # far above any other logit; red leads blue by 3 (+ the model's gap)
    assert tokens(logit_bias=bias) == [" red"] * 4
    # each use of red costs 2 more: by its third repeat blue leads, then red again
    penalised = tokens(logit_bias=bias, frequency_penalty=2.0)
    assert penalised[0] == " red" and " blue" in penalised and set(penalised) == {" red", " blue"}, penalised
    assert tokens(logit_bias=bias, presence_penalty=2.0, frequency_penalty=2.0)[:2] == [" red", " blue"]


def test_metadata_feedback_and_export(client, server, h):
    png = h.png_bytes(color="green")
    r = client.chat.completions.create(
        model="openvlthinker", messages=h.image_message("How many circles?", png), max_tokens=8,
        metadata={"problem_type": "numerical", "task_type": "counting", "reference_answer": "1"})
    fb = client.post("/feedback", body={"id": r.id, "choice_index": 0, "rating": 2, "correction": "1"}, cast_to=object)
    assert fb["id"].startswith("fb-") and fb["interaction_id"] == r.id
    with pytest.raises(openai.NotFoundError):
        client.post("/feedback", body={"id": "chatcmpl-unknown", "thumbs": "up"}, cast_to=object)

    cursor, found = None, None
    while found is None:
        page = admin(server, "GET", "/interactions", params={"gradable": "true", "limit": 2,
                                                               **({"after": cursor} if cursor else {})}).json()
        found = next((i for i in page["data"] if i["id"] == r.id), None)
        assert page["data"] or found, "interaction not exported"
        cursor = page["next_cursor"]
    assert found["metadata"]["reference_answer"] == "1" and found["problem_type"] == "numerical"
    assert found["feedback"][0]["rating"] == 2 and found["feedback"][0]["correction"] == "1"
    assert len(found["completion_token_ids"]) == len(found["logprobs"]) == r.usage.completion_tokens
    assert len(found["prompt_token_ids"]) == r.usage.prompt_tokens and found["mode"] == "think"
    assert found["latency_s"] > 0 and found["budget"] == 256
    sha = found["request"]["messages"][0]["content"][0]["sha256"]
    assert admin(server, "GET", f"/images/{sha}").content == png


def test_store_false_keeps_the_interaction_out(client, server):
    ask = dict(model="openvlthinker", messages=[{"role": "user", "content": "Count."}], max_tokens=4)
    private = client.chat.completions.create(**ask, store=False, service_tier="auto")
    kept = client.chat.completions.create(**ask, store=True)
    assert private.choices[0].message.content is not None
    assert admin(server, "GET", f"/interactions/{private.id}").status_code == 404
    assert admin(server, "GET", f"/interactions/{kept.id}").status_code == 200
    with pytest.raises(openai.NotFoundError) as info:
        client.post("/feedback", body={"id": private.id, "thumbs": "up"}, cast_to=object)
    assert "store: false" in info.value.message


def test_responses_api_with_image_matches_chat_continues_and_takes_feedback(client, server, h):
    png = h.png_bytes(96, 64)
    r = client.responses.create(model="openvlthinker", max_output_tokens=24, temperature=0, input=[
        {"role": "user", "content": [{"type": "input_image", "image_url": h.data_url(png)},
                                     {"type": "input_text", "text": "How many circles?"}]}])
    assert r.id.startswith("resp_") and r.object == "response" and r.status in ("completed", "incomplete")
    chat = client.chat.completions.create(model="openvlthinker", messages=h.image_message("How many circles?", png),
                                          max_tokens=24, temperature=0)
    assert r.output_text == chat.choices[0].message.content  # the same path, greedy
    assert r.usage.input_tokens == chat.usage.prompt_tokens > 16 and r._request_id.startswith("req_")
    fb = client.post("/feedback", body={"id": r.id, "thumbs": "up"}, cast_to=object)
    assert fb["interaction_id"] == r.id
    sha = admin(server, "GET", f"/interactions/{r.id}").json()["data"][0]["request"]["messages"][0]["content"][0]
    assert admin(server, "GET", f"/images/{sha['sha256']}").content == png
    assert client.responses.retrieve(r.id).output_text == r.output_text

    follow = client.responses.create(model="openvlthinker", previous_response_id=r.id, input="And squares?",
                                     max_output_tokens=8, temperature=0)
    # The stored conversation, its image included, and the answer come before the new question.
    assert follow.previous_response_id == r.id and follow.usage.input_tokens > r.usage.input_tokens
    with pytest.raises(openai.NotFoundError) as info:
        client.responses.create(model="openvlthinker", previous_response_id="resp_unknown", input="Hi")
    assert info.value.param == "previous_response_id"

    counted = client.responses.input_tokens.count(model="openvlthinker", previous_response_id=r.id,
                                                  input="And squares?")
    assert counted.input_tokens == follow.usage.input_tokens  # what the answer was given, without answering
    (asked,) = client.responses.input_items.list(r.id)  # the SDK's page; its own input only
    assert [part.type for part in asked.content] == ["input_image", "input_text"] and asked.role == "user"
    assert [item.content[0].text for item in client.responses.input_items.list(follow.id)] == ["And squares?"]

    client.responses.delete(follow.id)  # the SDK expects no body it reads; a 404 would raise
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(follow.id)
    assert client.responses.retrieve(r.id).id == r.id  # the one it continued stays


def test_responses_stream_helper_rebuilds_the_response(client):
    ask = dict(model="openvlthinker", input=[{"role": "user", "content": "How many squares?"}, *THINK],
               max_output_tokens=90, temperature=0, reasoning={"effort": "low"})  # budget 64, as in the chat test
    plain = client.responses.create(**ask)
    with client.responses.stream(**ask) as stream:  # the SDK's helper checks the event sequence as it goes
        events = list(stream)
    reasoning = next(item for item in plain.output if item.type == "reasoning")
    deltas = [e.delta for e in events if e.type == "response.reasoning_text.delta"]
    assert "".join(deltas) == reasoning.content[0].text and plain.usage.output_tokens_details.reasoning_tokens == 65
    final = events[-1]  # the random model may not stop within 90 tokens: then OpenAI's "response.incomplete"
    assert final.type == f"response.{plain.status}" and final.response.output_text == plain.output_text
    assert final.response.usage.output_tokens == plain.usage.output_tokens
    assert [item.type for item in final.response.output] == [item.type for item in plain.output] == ["reasoning",
                                                                                                   "message"]
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model="openvlthinker", input="Hi", tools=[{"type": "web_search"}])
    assert info.value.param == "tools[0]"  # function tools are served (test_tools_e2e.py), other kinds are not


def test_client_disconnect_frees_the_request(server):
    body = {"model": "openvlthinker", "messages": [{"role": "user", "content": "Talk."}], "max_tokens": 3000,
            "stream": True, "stop": ["never-appears"]}
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, timeout=30,
                      headers={"Authorization": f"Bearer {API}"}) as r:
        lines = r.iter_lines()
        first = next(line for line in lines if line.startswith("data: "))
        next(lines)
    iid = first.split('"id":"')[1].split('"')[0]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        metrics = httpx.get(f"{server.url}/metrics").text
        if "openvlthinker_in_flight_requests 0.0" in metrics and "openvlthinker_engine_running 0.0" in metrics:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the abandoned stream still holds the engine")
    assert admin(server, "GET", f"/interactions/{iid}").status_code == 404  # never acknowledged, never logged


def test_models_health_metrics(client, server):
    ids = [m.id for m in client.models.list().data]
    assert ids[:2] == ["model", "openvlthinker"]
    card = client.models.retrieve("openvlthinker")
    assert card.id == "openvlthinker" and card.object == "model" and card.root == "model"
    with pytest.raises(openai.NotFoundError) as info:
        client.models.retrieve("gpt-5")
    assert info.value.code == "model_not_found" and "openvlthinker" in info.value.message
    health = httpx.get(f"{server.url}/health").json()
    assert health["status"] == "ok" and health["engine_ready"]
    metrics = httpx.get(f"{server.url}/metrics").text
    assert "openvlthinker_tokens_total" in metrics and "openvlthinker_engine_batch_size" in metrics
    assert httpx.get(f"{server.url}/openapi.json").json()["info"]["title"] == "OpenVLThinker gateway"


def test_bad_inputs(client, server, h):
    def bad(status, param=None, code=None, **kw):
        body = dict(model="openvlthinker", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
        body.update(kw)
        with pytest.raises(openai.APIStatusError) as info:
            client.chat.completions.create(**body)
        err = info.value
        assert err.request_id.startswith("req_"), err.response.headers  # errors carry one too
        assert err.status_code == status and (param is None or err.param == param), err.body
        assert code is None or err.code == code, err.body

    img = lambda data: h.image_message("x", data)  # noqa: E731
    bad(400, "messages[0].content[0].image_url.url", "invalid_base64",
        messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,%%"}}]}])
    bad(400, "messages[0].content[0].image_url.url", "invalid_image", messages=img(b"plain text, not an image"))
    bad(400, "messages[0].content[0].image_url.url", "image_too_large", messages=img(h.png_bytes(5000, 4000)))
    bad(400, "messages", "too_many_images", messages=h.image_message("x", *[h.png_bytes(8, 8)] * 9))
    bad(400, "n", n=9)
    bad(400, "max_tokens", "context_length_exceeded", max_tokens=100_000)
    bad(400, "temperature", temperature=5)
    bad(400, "metadata.problem_type", metadata={"problem_type": "haiku"})
    bad(400, "presence_penalty", presence_penalty=2.5)
    bad(400, "service_tier", service_tier="flex")
    bad(400, "logit_bias", logit_bias={"red": 5})
    bad(400, "logit_bias", logit_bias={"12": 101})
    bad(400, "logit_bias", "engine_error", logit_bias={"99999999": 1})  # not in the vocabulary
    bad(404, "model", "model_not_found", model="gpt-5")
    bad(404, "model", "model_not_found", model="openvlthinker@v9999")
    raw = httpx.post(f"{server.url}/v1/chat/completions", content=b'{"model": ', timeout=10,
                     headers={"Authorization": f"Bearer {API}", "Content-Type": "application/json"})
    assert raw.status_code == 400 and raw.json()["error"]["code"] == "invalid_json"
    assert httpx.get(f"{server.url}/health").status_code == 200  # still serving


def test_auth(server):
    with pytest.raises(openai.AuthenticationError):
        server.client("wrong", max_retries=0).models.list()
    assert httpx.get(f"{server.url}/v1/models").status_code == 401
    assert httpx.get(f"{server.url}/v1/adapters", headers={"Authorization": f"Bearer {API}"}).status_code == 401
    assert httpx.get(f"{server.url}/v1/interactions").status_code == 401
    assert admin(server, "GET", "/adapters").status_code == 200


@pytest.mark.slow
def test_adapter_hot_swap_under_load(client, server):
    seen, failures, stop = [], [], threading.Event()

    def traffic():
        while not stop.is_set():
            try:
                r = client.chat.completions.create(model="openvlthinker", messages=[{"role": "user", "content": "Hi"}],
                                                   max_tokens=6)
                seen.append((r.model, r.adapter_version))
            except Exception as exc:  # noqa: BLE001
                failures.append(exc)

    threads = [threading.Thread(target=traffic) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        steps = [("load", {"version": "v0001"}), ("promote", {"version": "v0001"}), ("load", {"path": "policy-v0002"}),
                 ("promote", {"version": "v0002"}), ("rollback", None), ("unload", {"version": "v0002"}),
                 ("rollback", None), ("unload", {"version": "v0001"})]
        for action, body in steps:
            time.sleep(0.3)
            r = admin(server, "POST", f"/adapters/{action}", json=body)
            assert r.status_code == 200, (action, r.text)
            if action == "promote":
                pinned = client.chat.completions.create(model=f"openvlthinker@{body['version']}", max_tokens=4,
                                                        messages=[{"role": "user", "content": "Hi"}])
                assert pinned.adapter_version == body["version"]
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not failures, failures[:3]
    assert {m for m, _ in seen} <= {"model", "openvlthinker@v0001", "openvlthinker@v0002"}
    assert len({m for m, _ in seen}) >= 2
    assert all(v is None if m == "model" else m.endswith(v) for m, v in seen)
    listed = admin(server, "GET", "/adapters").json()
    assert listed["promoted"] is None and not any(a["loaded"] for a in listed["data"])


@pytest.mark.slow
def test_overload_and_admin_disabled(start_server):
    server = start_server("--max-batch", "1", "--max-queue", "1")
    assert httpx.get(f"{server.url}/v1/adapters").status_code == 403
    client = server.client(max_retries=0, timeout=60)
    results = []

    def call():
        try:
            client.chat.completions.create(model="openvlthinker", messages=[{"role": "user", "content": "Go"}],
                                           max_tokens=200)
            results.append(200)
        except openai.APIStatusError as exc:
            results.append((exc.status_code, exc.response.headers.get("retry-after"), exc.type))

    threads = [threading.Thread(target=call) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (503, "1", "server_overloaded") in results and 200 in results, results
    assert client.chat.completions.create(model="openvlthinker", messages=[{"role": "user", "content": "Go"}],
                                          max_tokens=2).choices


@pytest.mark.slow
def test_acknowledged_interactions_survive_kill_9(start_server, tmp_path, h):
    run_dir = tmp_path / "crash-run"
    first = start_server("--admin-key", ADMIN, run_dir=run_dir)
    client = first.client(max_retries=0)
    r = client.chat.completions.create(model="openvlthinker", messages=h.image_message("Count.", h.png_bytes()),
                                       max_tokens=8)
    fb = client.post("/feedback", body={"id": r.id, "thumbs": "up"}, cast_to=object)
    streamed = list(client.chat.completions.create(model="openvlthinker", stream=True, max_tokens=4,
                                                   messages=[{"role": "user", "content": "Hi"}]))
    first.kill()  # SIGKILL right after the acknowledgements
    second = start_server("--admin-key", ADMIN, run_dir=run_dir)
    items = admin(second, "GET", "/interactions").json()["data"]
    by_id = {i["id"]: i for i in items}
    assert set(by_id) == {r.id, streamed[0].id}
    assert by_id[r.id]["feedback"][0]["id"] == fb["id"] and by_id[r.id]["feedback"][0]["thumbs"] == "up"
    sha = by_id[r.id]["request"]["messages"][0]["content"][0]["sha256"]
    assert admin(second, "GET", f"/images/{sha}").status_code == 200
