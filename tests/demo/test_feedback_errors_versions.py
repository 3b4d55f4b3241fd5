"""Pure helpers of the demo: feedback bodies, error sentences and the versions table."""

import json

import httpx
import openai
import pytest

from demo.errors import describe_error
from demo.feedback import describe_feedback, feedback_payload
from demo.versions import read_metrics, version_rows


def test_feedback_payload_matches_the_gateway_schema():
    assert feedback_payload("chatcmpl-1", thumbs="up") == {"id": "chatcmpl-1", "thumbs": "up"}
    assert feedback_payload("chatcmpl-1", rating="4", correction="  B ") == {"id": "chatcmpl-1", "rating": 4,
                                                                             "correction": "B"}
    assert feedback_payload("c", thumbs="down", rating=1)["rating"] == 1


@pytest.mark.parametrize("kwargs, match", [
    ({"interaction_id": None, "thumbs": "up"}, "Pick an answer"),
    ({"interaction_id": "c"}, "Nothing to send"),
    ({"interaction_id": "c", "correction": "   "}, "Nothing to send"),
    ({"interaction_id": "c", "rating": 6}, "1 to 5"),
    ({"interaction_id": "c", "thumbs": "sideways"}, "'up' or 'down'"),
])
def test_feedback_payload_refuses_what_the_gateway_would(kwargs, match):
    with pytest.raises(ValueError, match=match):
        feedback_payload(**kwargs)


def test_describe_feedback():
    line = describe_feedback({"id": "c1", "thumbs": "up", "rating": 3, "correction": "2"}, "#2")
    assert line == "Saved 👍 ★★★☆☆ correct answer “2” for answer #2 (c1)."


def _status_error(status, body):
    request = httpx.Request("POST", "http://gw/v1/chat/completions")
    response = httpx.Response(status, request=request, content=json.dumps(body).encode())
    return openai.APIStatusError(f"Error code: {status}", response=response, body=body)


def test_describe_error_reads_the_gateway_message_and_says_what_to_do():
    body = {"error": {"message": "The bytes are not an image.", "type": "invalid_request_error", "param": None,
                      "code": None}}
    assert describe_error(_status_error(400, body)) == \
        "The server could not use this request (HTTP 400): The bytes are not an image."
    assert "overloaded; try again" in describe_error(_status_error(503, {"error": {"message": "queue full"}}))
    assert "--api-key" in describe_error(_status_error(401, {"error": {"message": "bad key"}}))
    request = httpx.Request("GET", "http://gw/v1/models")
    assert describe_error(httpx.HTTPStatusError("x", request=request, response=httpx.Response(
        500, request=request, text="boom"))) == "The server failed (HTTP 500): boom"
    refused = openai.APIConnectionError(request=request)
    assert describe_error(refused, "http://gw").startswith("Cannot reach http://gw")
    assert describe_error(httpx.ConnectError("refused"), "http://gw").startswith("Cannot reach http://gw")
    assert "did not answer in time" in describe_error(openai.APITimeoutError(request=request))
    assert describe_error(RuntimeError("x")) == "Something went wrong: RuntimeError."
    assert "Traceback" not in describe_error(KeyError("k"))


def test_versions_table_joins_models_with_rl_rewards(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    rows = [{"round": 0, "version": "v0001", "promoted": True, "reward_mean": 0.41, "gate_candidate": 0.5,
             "gate_questions": 71},
            {"round": 1, "version": None, "promoted": False}]
    metrics.write_text("\n".join(json.dumps(r) for r in rows) + "\n{\"round\": 2, \"vers")  # a line being written
    by_version = read_metrics(metrics)
    assert list(by_version) == ["v0001"]
    assert read_metrics(tmp_path / "absent.jsonl") == {} and read_metrics(None) == {}
    models = [{"id": "tiny", "root": "tiny", "parent": None},
              {"id": "openvlthinker", "root": "openvlthinker@v0001", "parent": "tiny"},
              {"id": "openvlthinker@v0001", "root": "openvlthinker@v0001", "parent": "tiny"}]
    assert version_rows(models, by_version) == [
        ["tiny (base)", "", "", "", ""],
        ["openvlthinker", "→ v0001", "", "", ""],
        ["openvlthinker@v0001", "yes", "0", "0.410", "0.500 ± 0.116 (71 q)"],
    ]
    assert version_rows(models[:2], {}, promoted=None)[1][1] == "→ v0001"
