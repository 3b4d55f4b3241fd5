"""Schemathesis over the served OpenAPI schema: every operation, 0 responses of 5xx, 0 answers off the schema.

A real gateway process on the tiny model (the `start_server` fixture) is fuzzed through its own
`/openapi.json` by the schemathesis CLI, all phases (examples, coverage, fuzzing, stateful) and every
check but two. `positive_data_acceptance` expects a 2xx for any request the schema admits, and the
gateway rightly refuses some of those with a 400 (a feedback without any rating, an empty input, a
cursor that is not one). `negative_data_rejection` expects a 4xx for any request the schema does
not admit, and pydantic's lax mode coerces a few such values instead (`"min_p": false` is read as
0.0, `"n": "2"` as 2); docs/reliability.md counts them. Real ids (stored completions and responses, an image, an adapter
version, the model names) are offered as dictionaries, so requests reach the handlers behind the
404s. Every request and response is read back from the HAR report to count statuses.

CI runs 20 examples per operation (about 20 s); a longer run, as recorded in docs/reliability.md:
    FUZZ_EXAMPLES=300 .venv/bin/python -m pytest tests/serve/test_schema_fuzz.py -p no:cacheprovider -s
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import httpx
import pytest

ADMIN = "adm-fuzz"
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "20"))
SEED = int(os.environ.get("FUZZ_SEED", "1"))


def seed_ids(server, h, model_dir) -> dict[str, list[str]]:
    """Store a few completions, a response and an image and publish an adapter; their ids by parameter."""
    url = f"{server.url}/v1"
    chats = [httpx.post(f"{url}/chat/completions", timeout=60, json={
        "model": "openvlthinker", "max_tokens": 8, "messages": h.image_message("How many circles?", h.png_bytes())})
        for _ in range(3)]
    resp = httpx.post(f"{url}/responses", timeout=60, json={"model": "openvlthinker", "input": "Hi", "max_output_tokens": 8})
    assert all(r.status_code == 200 for r in chats + [resp]), [r.text for r in chats + [resp]]
    head = {"Authorization": f"Bearer {ADMIN}"}
    stored = httpx.get(f"{url}/interactions/{chats[0].json()['id']}", headers=head, timeout=30).json()["data"][0]
    images = [p["sha256"] for m in stored["request"]["messages"] for p in m["content"] if p.get("sha256")]
    h.write_adapter(model_dir, server.run_dir / "adapters" / "policy-v0001", seed=1)
    return {"completion": [r.json()["id"] for r in chats], "response": [resp.json()["id"]], "image": images,
            "version": ["v0001"], "model": ["openvlthinker", "openvlthinker@v0001", Path(model_dir).name]}


def fuzz_config(ids: dict[str, list[str]]) -> str:
    """schemathesis.toml: the real ids as dictionaries, drawn half of the time for their parameters."""
    lines = [f"[dictionaries.{name}]\nvalues = {json.dumps(values)}\n" for name, values in ids.items()]
    bindings = {"path.completion_id": "completion", "path.interaction_id": "completion", "body.id": "completion",
                "path.response_id": "response", "body.previous_response_id": "response", "path.sha256": "image",
                "body.version": "version", "body.model": "model", "path.model": "model"}
    lines.append("[parameters]")
    lines += [f'"{key}" = {{ dictionary = "{name}", probability = 0.5 }}' for key, name in bindings.items()]
    return "\n".join(lines) + "\n"


def operation_of(url: str, method: str, templates: list[tuple[str, re.Pattern]]) -> str:
    path = httpx.URL(url).path
    for template, pattern in templates:
        if pattern.fullmatch(path):
            return f"{method} {template}"
    return f"{method} {path}"


def statuses(har: Path, schema: dict) -> dict[str, Counter]:
    """Response statuses per documented operation, from the HAR of every request made."""
    templates = sorted(((t, re.compile(re.sub(r"\{[^}]+\}", "[^/]+", t))) for t in schema["paths"]),
                       key=lambda item: item[0].count("{"))  # /v1/responses/input_tokens before /{response_id}
    out: dict[str, Counter] = {}
    for entry in json.loads(har.read_text())["log"]["entries"]:
        op = operation_of(entry["request"]["url"], entry["request"]["method"], templates)
        out.setdefault(op, Counter())[entry["response"]["status"]] += 1
    return out


@pytest.mark.slow
def test_every_operation_answers_as_documented_and_never_5xx(start_server, tiny_model, h, tmp_path):
    server = start_server("--admin-key", ADMIN, "--default-max-tokens", "16")
    ids = seed_ids(server, h, tiny_model)
    schema = httpx.get(f"{server.url}/openapi.json", timeout=10).json()
    operations = {f"{m.upper()} {p}" for p, ops in schema["paths"].items() for m in ops}
    (tmp_path / "schemathesis.toml").write_text(fuzz_config(ids))
    cli = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(tmp_path / "schemathesis.toml"), "run",
           f"{server.url}/openapi.json", "-H", f"Authorization: Bearer {ADMIN}", "--checks", "all",
           "--exclude-checks", "positive_data_acceptance,negative_data_rejection", "-n", str(EXAMPLES), "--seed", str(SEED), "-w", "1",
           "--request-timeout", "60", "--report", "har,json", "--report-dir", str(tmp_path / "report")]
    run = subprocess.run(cli, capture_output=True, text=True, timeout=600, cwd=tmp_path,  # its cache goes there
                         env={**os.environ, "NO_COLOR": "1"})
    report = json.loads(next((tmp_path / "report").glob("json-*.json")).read_text())
    seen = statuses(next((tmp_path / "report").glob("har-*.json")), schema)
    total = Counter()
    for counts in seen.values():
        total.update(counts)
    print(f"\nschemathesis {report['schemathesis_version']}, {EXAMPLES} examples per operation, seed {SEED}: "
          f"{report['operations']['tested']}/{len(operations)} operations, {report['test_cases']['generated']} cases, "
          f"{sum(total.values())} requests in {report['running_time']:.0f} s, statuses {dict(sorted(total.items()))}, "
          f"failures {report['failures']}")
    for op in sorted(seen):
        print(f"  {op}: {dict(sorted(seen[op].items()))}")
    server_errors = {op: c for op, c in seen.items() if any(status >= 500 for status in c)}
    assert not server_errors, (server_errors, server.output())
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert report["operations"]["tested"] == len(operations) and not report["errors"], report
    assert operations <= set(seen), operations - set(seen)
    # the handlers were reached, not only the validation in front of them
    assert all(any(200 <= status < 300 for status in seen[op]) for op in (
        "POST /v1/chat/completions", "POST /v1/responses", "GET /v1/chat/completions/{completion_id}",
        "GET /v1/images/{sha256}", "POST /v1/adapters/load")), seen


def test_the_schema_documents_the_error_shape_and_statuses_not_fastapis_422(make_client):
    schema = make_client(admin_key="adm").get("/openapi.json").json()
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    chat = schema["paths"]["/v1/chat/completions"]["post"]["responses"]
    assert "422" not in chat and {"400", "401", "404", "413", "503"} <= set(chat)
    assert chat["400"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorResponse"}
    assert chat["503"]["headers"]["Retry-After"]["required"] is True
    assert {"401", "403"} <= set(schema["paths"]["/v1/adapters"]["get"]["responses"])  # admin
    assert "409" in schema["paths"]["/v1/adapters/promote"]["post"]["responses"]
    assert set(schema["paths"]["/v1/models"]["get"]["responses"]) == {"200", "401"}


def test_a_405_allows_every_method_of_the_path(make_client):
    client = make_client()
    both = client.request("OPTIONS", "/v1/responses/resp_x")  # GET and DELETE are two routes of one path
    assert both.status_code == 405 and both.headers["allow"] == "DELETE, GET"
    assert both.json()["error"]["code"] == "method_not_allowed"
    # a path that also matches a route with a parameter is its own resource
    assert client.put("/v1/responses/input_tokens").headers["allow"] == "POST"
