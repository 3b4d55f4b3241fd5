"""Pure helpers of the demo: turns -> OpenAI messages and -> Gradio chat messages."""

import base64

from PIL import Image

from demo.conversation import answered, api_messages, chat_messages, image_part, new_turn, reset_answer


def _png(tmp_path, name="a.png", color="red"):
    path = tmp_path / name
    Image.new("RGB", (8, 8), color).save(path)
    return str(path)


def _done(text, images=(), answer="3", thinking="", id="chatcmpl-1", version=None):
    turn = new_turn(text, list(images), "auto")
    turn.update(answer=answer, thinking=thinking, id=id, model="tiny", version=version, done=True)
    return turn


def test_image_part_is_a_base64_data_url_of_the_file(tmp_path):
    path = _png(tmp_path)
    part = image_part(path)
    assert part["type"] == "image_url"
    head, data = part["image_url"]["url"].split(",", 1)
    assert head == "data:image/png;base64"
    assert base64.b64decode(data) == open(path, "rb").read()
    jpg = tmp_path / "b.JPG"
    Image.new("RGB", (8, 8)).save(jpg, "JPEG")
    assert image_part(jpg)["image_url"]["url"].startswith("data:image/jpeg;base64,")


def test_api_messages_send_images_then_text_and_keep_history_without_failed_turns(tmp_path):
    a, b = _png(tmp_path, "a.png"), _png(tmp_path, "b.png", "blue")
    failed = new_turn("broken", [], "auto")
    failed["error"] = "The server is overloaded"
    turns = [_done("first?", [a], answer="one"), failed, new_turn("which is bigger?", [a, b], "high")]
    messages = api_messages(turns)
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[1] == {"role": "assistant", "content": "one"}
    last = messages[-1]["content"]
    assert [p["type"] for p in last] == ["image_url", "image_url", "text"] and last[-1]["text"] == "which is bigger?"
    assert last[0] != last[1]  # two different images, in the order given
    only_images = api_messages([new_turn("", [a], "auto")])[0]["content"]
    assert [p["type"] for p in only_images] == ["image_url"]


def test_chat_messages_show_thinking_as_a_collapsible_thought_and_the_version(tmp_path):
    a = _png(tmp_path)
    turns = [_done("count?", [a], answer="3", thinking="two circles and a square", version="v0002")]
    messages, owners = chat_messages(turns)
    assert owners == [0, 0, 0]
    user, thought, answer = messages
    assert user == {"role": "user", "content": [{"path": a}, "count?"]}
    assert thought["metadata"] == {"title": "Thinking", "status": "done"}
    assert thought["content"] == "two circles and a square"
    assert answer["content"].startswith("3\n\n")
    assert "adapter v0002" in answer["content"] and "chatcmpl-1" in answer["content"]


def test_chat_messages_while_streaming_and_after_an_error():
    streaming = new_turn("why?", [], "high")
    streaming["thinking"] = "let me"
    messages, _ = chat_messages([streaming])
    assert messages[1]["metadata"]["status"] == "pending" and len(messages) == 2  # no footer before the end
    streaming["answer"] = "be"
    messages, _ = chat_messages([streaming])
    assert messages[1]["metadata"]["status"] == "done" and messages[2]["content"] == "be"
    waiting = new_turn("hi", [], "auto")
    assert chat_messages([waiting])[0][1]["content"] == "…"
    waiting["error"] = "Cannot reach the server"
    messages, owners = chat_messages([_done("a"), waiting])
    assert messages[-1]["content"] == "⚠️ Cannot reach the server" and owners == [0, 0, 1, 1]


def test_answered_lists_only_finished_answers_and_reset_clears_one():
    failed = new_turn("x", [], "auto")
    failed["error"] = "no"
    long = _done("a question that is much longer than forty characters in total", id="chatcmpl-2")
    turns = [_done("short", version="v0001"), failed, long]
    assert answered(turns) == [("#1 short (v0001)", 0), ("#3 a question that is much longer than for…"
                                                          " (base)", 2)]
    options = _done("Which bar is the largest?\nA. cat\nB. car", id="chatcmpl-3")
    assert answered([options]) == [("#1 Which bar is the largest? A. cat B. car (base)", 0)]  # one line
    fresh = reset_answer(long)
    assert fresh["text"] == long["text"] and fresh["answer"] == "" and fresh["id"] is None and not fresh["done"]


def test_the_effort_choices_are_the_apis():
    from demo.app import EFFORTS
    from openvlthinker.reasoning import EFFORTS as API_EFFORTS

    assert sorted(EFFORTS) == sorted(API_EFFORTS) and EFFORTS[0] == "auto"  # the default first
