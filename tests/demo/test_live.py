"""The demo driven through `gradio_client` against a live demo process and a live gateway (tiny model)."""

import hashlib
import json
import re

import pytest
from gradio_client import Client, handle_file

from demo.conversation import new_turn, api_messages
from demo.errors import describe_error
from demo.gateway import Gateway
from serve.launcher import free_port

pytestmark = pytest.mark.slow

ID = re.compile(r"\bid (chatcmpl-[0-9a-z]+)")


def _text(message):
    return "".join(part.get("text", "") for part in message["content"])


def test_chat_about_an_image_streams_thinking_and_feedback_reaches_the_store(live, example_image):
    client = Client(live.demo.url, verbose=False)
    job = client.submit({"text": "How many more squares than triangles are there?", "files": [handle_file(example_image)]},
                        "high", api_name="/chat")
    final = job.result(timeout=120)
    updates = job.outputs()
    messages = final[0]
    user, thought, answer = messages
    assert user["role"] == "user" and [p["type"] for p in user["content"]] == ["file", "text"]
    assert thought["metadata"] == {"title": "Thinking", "status": "done"} and _text(thought).strip()
    assert "answered by" in _text(answer) and "adapter base model" in _text(answer)
    # Streamed: the chat was redrawn while the thinking grew, before the answer's footer existed.
    partial = [u[0] for u in updates if len(u[0]) >= 2 and u[0][1]["metadata"] and
               u[0][1]["metadata"].get("status") == "pending"]
    assert len(partial) >= 2 and len({_text(p[1]) for p in partial}) >= 2
    interaction_id = ID.search(_text(answer)).group(1)

    status, rating, correction = client.predict(0, "4", "2", api_name="/feedback")
    assert status.startswith("Saved ★★★★☆ correct answer “2”") and interaction_id in status
    assert client.predict(0, api_name="/thumbs_up").startswith("Saved 👍")

    stored = live.interaction(interaction_id)
    image_sha = hashlib.sha256(open(example_image, "rb").read()).hexdigest()
    assert stored["request"]["messages"][0]["content"][0]["sha256"] == image_sha  # the uploaded image itself
    assert stored["effort"] == "high" and stored["request"]["params"]["stream"] is True
    feedback = {(f.get("rating"), f.get("correction"), f.get("thumbs")) for f in stored["feedback"]}
    assert feedback == {(4, "2", None), (None, None, "up")}

    table, note = client.predict(api_name="/versions")
    assert [row[:2] for row in table["data"]] == [["shapeworld-tiny (base)", ""], ["openvlthinker", "→ base"]]
    assert note == "RL rounds logged: 0"


def test_regenerate_replaces_the_last_answer_with_a_new_interaction(live, example_image):
    client = Client(live.demo.url, verbose=False)
    first = client.predict({"text": "Which object is small?", "files": [handle_file(example_image)]}, "none",
                           api_name="/chat")[0]
    again = client.predict("low", api_name="/regenerate")[0]
    assert len(again) >= 2 and again[0] == first[0]  # same question, one answer
    old, new = ID.search(_text(first[-1])).group(1), ID.search(_text(again[-1])).group(1)
    assert old != new and "effort low" in _text(again[-1])
    assert live.interaction(new)["effort"] == "low"


def test_server_errors_are_sentences_in_the_chat_and_the_demo_keeps_working(live, example_image, tmp_path):
    client = Client(live.demo.url, verbose=False)
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG but not really an image")
    messages = client.predict({"text": "What is this?", "files": [handle_file(str(bad))]}, "auto", api_name="/chat")[0]
    assert _text(messages[-1]).startswith("⚠️ The server could not use this request (HTTP 400): ")
    assert "not an image" in _text(messages[-1])
    assert client.predict(None, "5", "", api_name="/feedback")[0] == "⚠️ Pick an answer first."  # nothing answered yet
    messages = client.predict({"text": "Which bar is the largest?", "files": [handle_file(example_image)]}, "auto",
                              api_name="/chat")[0]
    assert "answered by" in _text(messages[-1])  # the next question works; the failed one is not resent
    stored = live.interaction(ID.search(_text(messages[-1])).group(1))
    assert [m["role"] for m in stored["request"]["messages"]] == ["user"]
    assert "Traceback" not in live.demo.output()


def test_auth_and_connection_errors_read_as_sentences(live, example_image):
    messages = api_messages([new_turn("How many?", [example_image], "none")])
    with pytest.raises(Exception) as refused_key:
        list(Gateway(live.gateway.url, api_key="wrong-key").stream_chat(messages, "none"))
    assert describe_error(refused_key.value).startswith(
        "The server refused the API key (start the demo with the right --api-key) (HTTP 401)")
    nobody = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(Exception) as refused:
        list(Gateway(nobody).stream_chat(messages, "none"))
    assert describe_error(refused.value, nobody) == f"Cannot reach {nobody}: is the server running? (APIConnectionError)"
    with pytest.raises(Exception) as unknown:
        Gateway(live.gateway.url, live.api_key).feedback({"id": "chatcmpl-nope", "thumbs": "up"})
    assert describe_error(unknown.value).startswith("The server does not know this (HTTP 404): ")


# Last in this file: it promotes an adapter on the shared gateway, so later answers come from v0001.
def test_a_promoted_adapter_answers_and_the_panel_shows_its_rl_reward(live, example_image, tmp_path):
    from peft import get_peft_model

    from openvlthinker.models import DEFAULT_MODEL, load, lora_config
    from openvlthinker.versions import publish

    model, _ = load(DEFAULT_MODEL)
    get_peft_model(model, lora_config(r=4)).save_pretrained(tmp_path / "lora")
    publish(tmp_path / "lora", live.adapters, 1, metrics={"reward": 0.25})
    live.admin("POST", "/adapters/load", json={"version": "v0001"})
    live.admin("POST", "/adapters/promote", json={"version": "v0001"})
    live.metrics.write_text(json.dumps({"round": 0, "version": "v0001", "promoted": True, "reward_mean": 0.25,
                                        "gate_candidate": 0.125}) + "\n")

    client = Client(live.demo.url, verbose=False)
    messages = client.predict({"text": "Which bar is the largest?", "files": [handle_file(example_image)]}, "none",
                              api_name="/chat")[0]
    assert "adapter v0001" in _text(messages[-1])
    table, note = client.predict(api_name="/versions")
    assert table["data"] == [["shapeworld-tiny (base)", "", "", "", ""],
                             ["openvlthinker", "→ v0001", "", "", ""],
                             ["openvlthinker@v0001", "yes", "0", "0.250", "0.125"]]
    assert note == "RL rounds logged: 1"
