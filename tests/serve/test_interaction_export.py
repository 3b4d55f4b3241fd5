"""The typed seam between the gateway and the loop, on a real server (TransformersEngine, tiny model):
the export's schema in /openapi.json, `return_token_ids` against what the store logged, the loop's
Rollout.from_interaction on a real export, and a malformed export refused by the loop's client.
"""

import copy
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from online_rl.client import GatewayClient
from online_rl.exported import MalformedExport, SampledChoice, StoredChoice, sampled_choices
from online_rl.rollout import Rollout

ADMIN = "adm-export"
ASK = [{"role": "user", "content": "How many circles are there?"}]


@pytest.fixture(scope="module")
def server(start_server):
    return start_server("--admin-key", ADMIN, "--max-batch", "4")


@pytest.fixture(scope="module")
def loop(server):
    client = GatewayClient(server.url, "none", ADMIN)
    yield client
    client.http.close()


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    from openvlthinker.models import load_processor

    return load_processor(tiny_model).tokenizer


def test_openapi_documents_the_interaction_export(server):
    spec = httpx.get(f"{server.url}/openapi.json", timeout=30).json()
    schemas = spec["components"]["schemas"]
    interaction = schemas["Interaction"]
    fields = set(interaction["properties"])
    assert {"id", "choice_index", "cursor", "adapter_version", "mode", "metadata", "request", "text",
            "prompt_token_ids", "completion_token_ids", "logprobs", "usage", "feedback", "gradable"} <= fields
    assert {"prompt_token_ids", "completion_token_ids", "logprobs", "cursor"} <= set(interaction["required"])
    assert interaction["properties"]["completion_token_ids"]["items"]["type"] == "integer"
    assert interaction["properties"]["logprobs"]["items"]["type"] == "number"
    assert "sha256" in schemas["StoredPart"]["properties"] and "messages" in schemas["StoredRequest"]["properties"]
    # every export route names its model, so a client can be generated from the spec
    ok = lambda path: spec["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]  # noqa: E731
    assert ok("/v1/interactions") == ok("/v1/interactions/{interaction_id}") == {"$ref": "#/components/schemas/InteractionList"}
    assert ok("/v1/feedback") == {"$ref": "#/components/schemas/FeedbackList"}
    assert schemas["InteractionList"]["properties"]["data"]["items"] == {"$ref": "#/components/schemas/Interaction"}
    assert schemas["FeedbackItem"]["properties"]["interaction"] == {"$ref": "#/components/schemas/Interaction"}
    assert "return_token_ids" in schemas["ChatCompletionRequest"]["properties"]
    assert "token_ids" in schemas["Choice"]["properties"] and "prompt_token_ids" in schemas["ChatCompletion"]["properties"]


def test_the_loops_view_names_only_fields_the_server_always_sends(server):
    """online_rl/exported.py does not import the server's models: this is what keeps the two in step."""
    schemas = httpx.get(f"{server.url}/openapi.json", timeout=30).json()["components"]["schemas"]
    required = set(schemas["Interaction"]["required"])
    loop_required = {name for name, field in StoredChoice.model_fields.items() if field.is_required()}
    assert loop_required <= required, loop_required - required


def test_return_token_ids_are_the_logged_tokens(server, loop, tokenizer):
    client = server.client()
    r = client.chat.completions.create(model="openvlthinker", messages=ASK, n=2, max_tokens=24, temperature=1.0,
                                       seed=3, logprobs=True, extra_body={"return_token_ids": True})
    stored = {c.choice_index: c for c in loop.interaction(r.id)}
    assert r.prompt_token_ids == stored[0].prompt_token_ids == stored[1].prompt_token_ids
    for choice in r.choices:
        logged = stored[choice.index]
        assert choice.token_ids == logged.completion_token_ids and choice.token_ids
        # the ids decode to the text the server returned (thinking and answer, tags included)
        text = tokenizer.decode(choice.token_ids, skip_special_tokens=True)
        assert text == logged.text and (choice.message.content or "") in text
        assert [t.logprob for t in choice.logprobs.content] == pytest.approx(logged.logprobs)
        assert choice.text == logged.text and r.mode == logged.mode
    # The loop's rollout is this one response: the same sampled choices as the store's, field by field.
    sampled = sampled_choices(r.model_dump())
    fields = list(SampledChoice.model_fields)
    assert [c.model_dump() for c in sampled] == [stored[i].model_dump(include=set(fields)) for i in (0, 1)]
    # without the flag the response carries no ids, as before
    plain = client.chat.completions.create(model="openvlthinker", messages=ASK, max_tokens=4)
    assert plain.prompt_token_ids is None and plain.choices[0].token_ids is None
    assert plain.mode is None and plain.choices[0].text is None
    with pytest.raises(MalformedExport, match=r"POST /v1/chat/completions: .*data\.0\.prompt_token_ids"):
        sampled_choices(plain.model_dump())


def test_streamed_token_ids_add_up_to_the_logged_tokens(server, loop, tokenizer):
    client = server.client()
    stream = client.chat.completions.create(model="openvlthinker", messages=ASK, n=2, max_tokens=24,
                                            temperature=1.0, seed=5, stream=True,
                                            extra_body={"return_token_ids": True})
    ids: dict[int, list[int]] = {0: [], 1: []}
    carried = {0: 0, 1: 0}  # chunks that brought tokens: they come as they are sampled, not all at the end
    prompts, modes, completion_id = [], [], None
    for chunk in stream:
        completion_id = chunk.id
        if getattr(chunk, "prompt_token_ids", None) is not None:
            prompts.append(chunk.prompt_token_ids)
            modes.append(chunk.mode)
        for choice in chunk.choices:
            new = getattr(choice, "token_ids", None) or []
            ids[choice.index] += new
            carried[choice.index] += bool(new)
    stored = {c.choice_index: c for c in loop.interaction(completion_id)}
    assert prompts == [stored[0].prompt_token_ids]  # once, as vLLM sends it
    assert modes == [stored[0].mode]
    for i in (0, 1):
        assert ids[i] == stored[i].completion_token_ids and ids[i]
        assert carried[i] > 1 or len(ids[i]) == 1
        assert tokenizer.decode(ids[i], skip_special_tokens=True) == stored[i].text


def test_rollout_from_a_real_exported_interaction(server, loop):
    client = server.client()
    r = client.chat.completions.create(model="openvlthinker", messages=ASK, n=2, max_tokens=16, temperature=1.0,
                                       seed=7, metadata={"source": "rl-rollout"}, extra_body={"return_token_ids": True})
    choices = loop.interaction(r.id)
    rollout = Rollout.from_interaction(choices, 1, reward=0.5, accuracy=1.0, group_id=r.id, task="count")
    assert rollout.prompt_ids == r.prompt_token_ids and rollout.completion_ids == r.choices[1].token_ids
    assert rollout.behaviour_logprobs == choices[1].logprobs and len(rollout.behaviour_logprobs) == len(rollout.completion_ids)
    assert rollout.interaction_id == r.id and rollout.version == 0 and rollout.reward == 0.5 and not rollout.off_policy
    # the same record found by paging the export maps to the same rollout
    page = loop.interactions(limit=1000)
    paged = next(c for c in page.data if c.id == r.id and c.choice_index == 1)
    assert paged.loop_traffic and Rollout.from_interaction(paged, reward=0.5, accuracy=1.0, group_id=r.id,
                                                           task="count") == rollout
    with pytest.raises(ValueError, match="no choice 5"):
        Rollout.from_interaction(choices, 5)


class _Replay(BaseHTTPRequestHandler):
    """A server that answers every GET with one fixed JSON body (the export as a broken server would send it)."""

    body = b"{}"

    def do_GET(self):  # noqa: N802 - http.server's name
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("breakage, named", [
    (lambda item: item["logprobs"].pop(), "data.0: Value error, logprobs has"),
    (lambda item: item["completion_token_ids"].__setitem__(0, "x"), "data.0.completion_token_ids.0: Input should be a valid integer"),
    (lambda item: item.pop("prompt_token_ids"), "data.0.prompt_token_ids: Field required"),
    (lambda item: item["request"]["messages"][0]["content"].append({"type": "image"}),
     "data.0.request.messages.0.content.1: Value error, an image part needs 'sha256'"),
], ids=["logprobs-short", "id-not-int", "ids-missing", "image-without-sha256"])
def test_a_malformed_export_is_an_error_naming_the_field(server, loop, breakage, named):
    r = server.client().chat.completions.create(model="openvlthinker", messages=ASK, max_tokens=4)
    page = httpx.get(f"{server.url}/v1/interactions/{r.id}", headers={"Authorization": f"Bearer {ADMIN}"},
                     timeout=30).json()
    broken = copy.deepcopy(page)
    breakage(broken["data"][0])
    handler = type("Handler", (_Replay,), {"body": json.dumps(broken).encode()})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        replay = GatewayClient(f"http://127.0.0.1:{httpd.server_address[1]}", "none", ADMIN, retry_s=0)
        assert loop.interaction(r.id)[0].id == r.id  # the real server's record reads
        with pytest.raises(MalformedExport, match="GET /v1/interactions: the server sent a record the loop "
                                                  "cannot read") as err:
            replay.interactions()
        assert named in str(err.value)
        with pytest.raises(MalformedExport, match=f"GET /v1/interactions/{r.id}"):
            replay.interaction(r.id)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)
