"""Stored chat completions in process (ScriptedEngine): retrieve, list with filters and pages, the
messages asked with, deletion. The official SDK against a real server is in test_e2e.py."""

import time

THOUGHT, ANSWER = "I see one red circle.", "1"


def chat(client, text="How many circles?", **body):
    r = client.post("/v1/chat/completions", json={
        "model": "scripted-model", "messages": [{"role": "user", "content": text}], **body})
    assert r.status_code == 200, r.text
    return r.json()


def test_retrieve_gives_the_completion_as_answered(make_client):
    client = make_client()
    made = chat(client, n=2, metadata={"problem_type": "numerical", "reference_answer": "1"})
    got = client.get(f"/v1/chat/completions/{made['id']}")
    assert got.status_code == 200, got.text
    assert got.json() == made  # both choices, usage summed over them, same time and fingerprint
    assert made["choices"][1]["message"]["reasoning_content"] == THOUGHT and made["usage"]["completion_tokens"] > 0
    for missing in ("chatcmpl-unknown", "resp_x"):
        r = client.get(f"/v1/chat/completions/{missing}")
        assert r.status_code == 404 and r.json()["error"]["code"] == "completion_not_found"
    private = chat(client, store=False)["id"]
    assert client.get(f"/v1/chat/completions/{private}").status_code == 404
    resp = client.post("/v1/responses", json={"model": "scripted-model", "input": "Hi"}).json()["id"]
    assert client.get(f"/v1/chat/completions/{resp}").status_code == 404  # a response is not a chat completion


def test_list_pages_in_order_and_filters_by_model_and_metadata(make_client):
    client = make_client()
    ids = [chat(client, metadata={"user_tag": "a" if i % 2 else "b"})["id"] for i in range(5)]
    client.post("/v1/responses", json={"model": "scripted-model", "input": "Hi"})  # not listed

    page = client.get("/v1/chat/completions").json()
    assert [c["id"] for c in page["data"]] == ids and page["has_more"] is False  # oldest first by default
    assert page["object"] == "list" and page["first_id"] == ids[0] and page["last_id"] == ids[-1]

    first = client.get("/v1/chat/completions", params={"limit": 2, "order": "desc"}).json()
    assert [c["id"] for c in first["data"]] == ids[:-3:-1] and first["has_more"] is True
    rest = client.get("/v1/chat/completions", params={"limit": 10, "order": "desc", "after": first["last_id"]}).json()
    assert [c["id"] for c in rest["data"]] == ids[-3::-1] and rest["has_more"] is False

    tagged = client.get("/v1/chat/completions", params={"metadata[user_tag]": "a"}).json()
    assert [c["id"] for c in tagged["data"]] == [ids[1], ids[3]]
    assert client.get("/v1/chat/completions", params={"metadata[user_tag]": "z"}).json()["data"] == []
    assert len(client.get("/v1/chat/completions", params={"model": "scripted-model"}).json()["data"]) == 5
    assert client.get("/v1/chat/completions", params={"model": "other"}).json()["data"] == []

    for params, param in (({"limit": 0}, "limit"), ({"limit": 101}, "limit"), ({"order": "x"}, "order"),
                          ({"after": "chatcmpl-nope"}, "after"), ({"after": ids[0].replace("chatcmpl-", "resp_")}, "after"),
                          ({'metadata[a"b]': "1"}, 'metadata[a"b]')):
        r = client.get("/v1/chat/completions", params=params)
        assert r.status_code == 400 and r.json()["error"]["param"] == param, (params, r.text)


def test_messages_are_the_ones_asked_with(make_client, h):
    client = make_client()
    png = h.png_bytes(color="blue")
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": h.data_url(png)}},
                                             {"type": "text", "text": "How many circles?"}]},
                {"role": "assistant", "content": "2"}, {"role": "user", "content": "And squares?"}]
    made = client.post("/v1/chat/completions", json={"model": "scripted-model", "messages": messages}).json()
    page = client.get(f"/v1/chat/completions/{made['id']}/messages").json()
    assert [(m["role"], m["content"]) for m in page["data"]] == [
        ("system", "Be brief."), ("user", "How many circles?"), ("assistant", "2"), ("user", "And squares?")]
    image = page["data"][1]["content_parts"][0]
    assert image == {"type": "image_url", "image_url": {"url": h.data_url(png)}}  # read back from the store
    ids = [m["id"] for m in page["data"]]
    assert len(set(ids)) == 4 and page["has_more"] is False
    newest = client.get(f"/v1/chat/completions/{made['id']}/messages", params={"order": "desc", "limit": 3}).json()
    assert [m["id"] for m in newest["data"]] == ids[:0:-1] and newest["has_more"] is True
    r = client.get(f"/v1/chat/completions/{made['id']}/messages", params={"after": "x"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "after"


def test_delete_removes_it_from_every_view_and_the_rl_loops(make_client):
    client = make_client()
    kept, gone = chat(client)["id"], chat(client, metadata={"problem_type": "numerical", "reference_answer": "1"})["id"]
    assert client.post("/v1/feedback", json={"id": gone, "thumbs": "up"}).status_code == 200
    r = client.delete(f"/v1/chat/completions/{gone}")
    assert r.status_code == 200 and r.json() == {"id": gone, "object": "chat.completion.deleted", "deleted": True}
    assert client.get(f"/v1/chat/completions/{gone}").status_code == 404
    assert [c["id"] for c in client.get("/v1/chat/completions").json()["data"]] == [kept]
    store = client.app.state.store
    assert store.list_feedback()[0] == [] and [r["id"] for r in store.list_interactions(gradable=True)[0]] == []
    assert client.post("/v1/feedback", json={"id": gone, "thumbs": "up"}).status_code == 404
    assert client.delete(f"/v1/chat/completions/{gone}").status_code == 404


def test_rows_stored_before_the_time_and_fingerprint_were_kept_still_read(make_client):
    client = make_client()
    made = chat(client)
    store = client.app.state.store
    (row,) = store.get_interaction(made["id"])
    request = {k: v for k, v in row["request"].items() if k not in ("created", "system_fingerprint")}
    store.delete_interaction(made["id"])
    store.add_interactions([dict(
        id=made["id"], choice_index=0, created=time.time(), model=row["model"], adapter_version=None, effort="auto",
        mode=row["mode"], budget=row["budget"], request=request, meta={}, thinking=row["thinking"],
        answer=row["answer"], text=row["text"], prompt_token_ids=[1], completion_token_ids=[2, 3], logprobs=[0.0, 0.0],
        finish_reason="stop", prompt_tokens=1, completion_tokens=2, reasoning_tokens=1, latency_s=0.5)])
    got = client.get(f"/v1/chat/completions/{made['id']}").json()
    assert got["system_fingerprint"] == "fp_unknown" and got["choices"][0]["message"]["content"] == ANSWER
    assert got["usage"] == {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3,
                            "completion_tokens_details": {"reasoning_tokens": 1}}


def test_an_image_gone_from_the_store_is_a_404_naming_the_parameter(make_client, h):
    client = make_client()
    png = h.png_bytes(color="blue")
    parts = [{"type": "image_url", "image_url": {"url": h.data_url(png)}}, {"type": "text", "text": "How many?"}]
    made = chat(client, text=parts)
    resp = client.post("/v1/responses", json={"model": "scripted-model", "input": [{"role": "user", "content": [
        {"type": "input_image", "image_url": h.data_url(png)}, {"type": "input_text", "text": "How many?"}]}]}).json()
    store = client.app.state.store
    sha = store.get_interaction(made["id"])[0]["request"]["messages"][0]["content"][0]["sha256"]
    store.blobs.path(sha).unlink()  # the same bytes: one file for both
    for r, param, owner in ((client.get(f"/v1/chat/completions/{made['id']}/messages"), "completion_id", "completion"),
                            (client.get(f"/v1/responses/{resp['id']}/input_items"), "response_id", "response"),
                            (client.post("/v1/responses", json={"model": "scripted-model", "input": "And?",
                                                               "previous_response_id": resp["id"]}),
                             "previous_response_id", "response")):
        error = r.json()["error"]
        assert r.status_code == 404 and error["code"] == "image_not_found" and error["param"] == param, r.text
        assert error["message"].startswith(f"An image of {owner} ")
