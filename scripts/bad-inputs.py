"""Every class of bad input tried on the gateway, and the answer each gets, as a Markdown table.

Sends real requests to a real `openvlthinker serve` on the shipped tiny model (HTTP bodies,
images, adapters dropped in its adapters folder) and starts `openvlthinker serve` with bad
config files and flags, then prints one row per input: what was sent, the HTTP status (or the
command's exit code) and the first words of the message. docs/reliability.md shows its output;
run it again to refresh that table:

    .venv/bin/python scripts/bad-inputs.py > /tmp/bad-inputs.md
"""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import httpx

API, ADMIN = "sk-bad-inputs", "adm-bad-inputs"
QUESTION = "How many circles are there?"


def png(w: int = 32, h: int = 32, noise: bool = False) -> bytes:
    from PIL import Image

    img = Image.frombytes("RGB", (w, h), os.urandom(w * h * 3)) if noise else Image.new("RGB", (w, h), "white")
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def with_image(url: str, count: int = 1) -> dict:
    parts = [{"type": "image_url", "image_url": {"url": url}} for _ in range(count)]
    return {"model": "openvlthinker", "max_tokens": 4,
            "messages": [{"role": "user", "content": [*parts, {"type": "text", "text": QUESTION}]}]}


def chat(**extra: Any) -> dict:
    return {"model": "openvlthinker", "max_tokens": 4, "messages": [{"role": "user", "content": QUESTION}], **extra}


def message(resp: httpx.Response) -> str:
    try:
        error = resp.json().get("error") or {}
        return error.get("message") or json.dumps(resp.json())[:160]
    except ValueError:
        return resp.text[:160]


def http_rows(url: str, adapters: Path, model: str) -> list[tuple[str, str, str, str]]:
    """(class, input, status, message) for each bad HTTP input."""
    key = {"Authorization": f"Bearer {API}"}
    admin = {"Authorization": f"Bearer {ADMIN}"}
    cases: list[tuple[str, str, Callable[[], httpx.Response]]] = []

    def post(path: str, headers=key, **kw) -> Callable[[], httpx.Response]:
        return lambda: httpx.post(f"{url}{path}", headers=headers, timeout=60, **kw)

    body = [
        ("no API key", post("/v1/chat/completions", headers={}, json=chat())),
        ("a wrong API key", post("/v1/chat/completions", headers={"Authorization": "Bearer nope"}, json=chat())),
        ("not JSON (`{`)", post("/v1/chat/completions", content=b"{", headers={**key, "content-type": "application/json"})),
        ("a JSON array", post("/v1/chat/completions", json=[chat()])),
        ("an empty body", post("/v1/chat/completions", content=b"", headers={**key, "content-type": "application/json"})),
        ("JSON sent as text/plain", post("/v1/chat/completions", content=json.dumps(chat()).encode(),
                                         headers={**key, "content-type": "text/plain"})),
        ("`messages` missing", post("/v1/chat/completions", json={"model": "openvlthinker"})),
        ("`messages` empty", post("/v1/chat/completions", json=chat(messages=[]))),
        ("an unknown parameter (`audio`)", post("/v1/chat/completions", json=chat(audio={"voice": "x"}))),
        ("a wrong type (`max_tokens: \"many\"`)", post("/v1/chat/completions", json=chat(max_tokens="many"))),
        ("`temperature: -1`", post("/v1/chat/completions", json=chat(temperature=-1))),
        ("`n: 99` (above --max-n)", post("/v1/chat/completions", json=chat(n=99))),
        ("`max_tokens` past the context", post("/v1/chat/completions", json=chat(max_tokens=100000))),
        ("`top_logprobs` without `logprobs`", post("/v1/chat/completions", json=chat(top_logprobs=3))),
        ("`logit_bias` with a key that is not a token id", post("/v1/chat/completions", json=chat(logit_bias={"x": 1}))),
        ("`tool_choice` naming no offered tool", post("/v1/chat/completions", json=chat(
            tool_choice={"type": "function", "function": {"name": "count"}}))),
        ("a lone surrogate in the text", post("/v1/chat/completions", content=json.dumps(chat(
            messages=[{"role": "user", "content": "\ud800"}])).encode(), headers={**key, "content-type": "application/json"})),
        ("an unknown model", post("/v1/chat/completions", json=chat(model="gpt-5"))),
        ("a version that is not loaded (`openvlthinker@v0099`)", post("/v1/chat/completions",
                                                                     json=chat(model="openvlthinker@v0099"))),
        ("a body over --max-body-bytes (2 MiB sent, 1 MiB cap)", post("/v1/chat/completions", content=b"x" * (2 << 20),
                                                                   headers={**key, "content-type": "application/json"})),
        ("a wrong method (PUT)", lambda: httpx.put(f"{url}/v1/chat/completions", headers=key, timeout=10)),
        ("an unknown route", lambda: httpx.get(f"{url}/v1/embeddings", headers=key, timeout=10)),
        ("feedback on an unknown id", post("/v1/feedback", json={"id": "chatcmpl-nope", "thumbs": "up"})),
        ("feedback without a rating", post("/v1/feedback", json={"id": "chatcmpl-nope"})),
        ("feedback `rating: 9`", post("/v1/feedback", json={"id": "chatcmpl-nope", "rating": 9})),
        ("responses: an unknown `previous_response_id`", post("/v1/responses", json={
            "model": "openvlthinker", "input": "Hi", "previous_response_id": "resp_nope"})),
        ("an admin route with the API key", lambda: httpx.get(f"{url}/v1/adapters", headers=key, timeout=10)),
    ]
    cases += [("HTTP body", name, fn) for name, fn in body]
    images = [
        ("not base64", post("/v1/chat/completions", json=with_image("data:image/png;base64,@@@"))),
        ("base64 of text, not an image", post("/v1/chat/completions", json=with_image(data_url(b"hello world")))),
        ("a truncated PNG", post("/v1/chat/completions", json=with_image(data_url(png(64, 64, True)[:300])))),
        ("an SVG", post("/v1/chat/completions", json=with_image(data_url(b"<svg xmlns='http://www.w3.org/2000/svg'/>",
                                                                          "image/svg+xml")))),
        ("5000 x 4000 pixels (above --max-image-pixels 16e6)", post("/v1/chat/completions",
                                                                    json=with_image(data_url(png(5000, 4000))))),
        ("300 KB (above --max-image-bytes 200000)", post("/v1/chat/completions",
                                                        json=with_image(data_url(png(320, 320, True))))),
        ("9 images (above --max-images 8)", post("/v1/chat/completions", json=with_image(data_url(png()), 9))),
        ("an http URL (remote images off)", post("/v1/chat/completions", json=with_image("http://example.com/a.png"))),
        ("a file: URL", post("/v1/chat/completions", json=with_image("file:///etc/passwd"))),
    ]
    cases += [("image", name, fn) for name, fn in images]
    cases += [("adapter", name, post("/v1/adapters/load", headers=admin, json=load))
              for name, load in adapter_cases(adapters, model)]
    cases += [("adapter", "promote a version that is not loaded",
               post("/v1/adapters/promote", headers=admin, json={"version": "v0099"})),
              ("adapter", "roll back with nothing promoted", post("/v1/adapters/rollback", headers=admin)),
              ("adapter", "unload the promoted version", lambda: _unload_promoted(url, admin))]
    return [(kind, name, str(resp.status_code), message(resp)) for kind, name, fn in cases for resp in [fn()]]


def _unload_promoted(url: str, admin: dict) -> httpx.Response:
    for path in ("/v1/adapters/load", "/v1/adapters/promote"):
        assert httpx.post(f"{url}{path}", headers=admin, json={"version": "v0001"}, timeout=60).status_code == 200
    return httpx.post(f"{url}/v1/adapters/unload", headers=admin, json={"version": "v0001"}, timeout=60)


def adapter_cases(adapters: Path, model: str) -> list[tuple[str, dict]]:
    """Adapter folders broken in the ways a crash, a bad trainer or a wrong copy would, and the load requests."""
    from safetensors.torch import load_file, save_file

    from openvlthinker.models import random_lora
    from openvlthinker.versions import publish, sha256_file

    with tempfile.TemporaryDirectory() as tmp:
        good = Path(tmp) / "good"
        random_lora(model, good, seed=1, r=4)
        for number in (1, 2, 3, 4, 5):
            publish(good, adapters, number)
    weights = lambda n: adapters / f"policy-v000{n}" / "adapter_model.safetensors"  # noqa: E731
    tensors = load_file(str(weights(2)))
    first = sorted(tensors)[0]
    tensors[first] = tensors[first] * float("nan")
    save_file(tensors, str(weights(2)), metadata={"format": "pt"})
    manifest = adapters / "policy-v0002" / "manifest.json"
    data = json.loads(manifest.read_text())
    data["sha256"]["adapter_model.safetensors"] = sha256_file(weights(2))  # so the weights check must find it
    manifest.write_text(json.dumps(data))
    weights(3).write_bytes(weights(3).read_bytes()[:500])  # truncated, manifest still listing the whole file
    weights(4).write_bytes(weights(4).read_bytes()[:500])
    (adapters / "policy-v0004" / "manifest.json").unlink()  # truncated, no manifest to catch it
    (adapters / "policy-v0005" / "adapter_config.json").write_text('{"peft_type": "LORA", "target_modules": ["nope"]}')
    (adapters / "policy-v0005" / "manifest.json").unlink()
    (adapters / "empty").mkdir()
    return [("NaN weights (manifest matching them)", {"version": "v0002"}),
            ("truncated weights (manifest listing the whole file)", {"version": "v0003"}),
            ("truncated weights, no manifest", {"version": "v0004"}),
            ("a LoRA for layers the model does not have", {"version": "v0005"}),
            ("a folder without PEFT files", {"path": "empty"}),
            ("no such version", {"version": "v0099"}),
            ("a path out of the folder (`../x`)", {"path": "../x"}),
            ("an absolute path", {"path": "/etc"}),
            ("an invalid version name (`v 1`)", {"version": "v 1"}),
            ("both `version` and `path`", {"version": "v0001", "path": "policy-v0001"})]


def cli_rows(tmp: Path) -> list[tuple[str, str, str, str]]:
    """(class, input, exit code, message) for each bad config file and flag of `openvlthinker serve`."""
    configs = {
        "a list, not a mapping": "- model\n- port\n",
        "an unknown key (`batch_size`)": "batch_size: 4\n",
        "an invalid value (`engine: tpu`)": "engine: tpu\n",
        "a wrong type (`max_batch: many`)": "max_batch: many\n",
        "not YAML (`port: [8000`)": "port: [8000\n",
        "a non-loopback host without a key (`host: 0.0.0.0`)": "host: 0.0.0.0\n",
    }
    runs: list[tuple[str, str, list[str]]] = []
    for i, (name, text) in enumerate(configs.items()):
        path = tmp / f"config{i}.yaml"
        path.write_text(text)
        runs.append(("config file", name, ["--config", str(path)]))
    runs.append(("config file", "a file that does not exist", ["--config", str(tmp / "missing.yaml")]))
    flags = [
        ("`--port 70000`", ["--port", "70000"]),
        ("`--port abc`", ["--port", "abc"]),
        ("`--engine tpu`", ["--engine", "tpu"]),
        ("`--max-batch 0`", ["--max-batch", "0"]),
        ("`--host 0.0.0.0` without a key", ["--host", "0.0.0.0"]),
        ("`--api-key K --admin-key K`", ["--api-key", "k", "--admin-key", "k"]),
        ("`--model /no/such/folder`", ["--model", "/no/such/folder"]),
        ("`--remote-image-allow-network 10.0.0.0/8` without --allow-remote-images",
         ["--remote-image-allow-network", "10.0.0.0/8"]),
        ("`--allow-remote-images --remote-image-allow-network nonsense`",
         ["--allow-remote-images", "--remote-image-allow-network", "nonsense"]),
        ("`--vllm-python /no/python --engine vllm`", ["--engine", "vllm", "--vllm-python", "/no/python"]),
    ]
    runs += [("CLI flag", name, args) for name, args in flags]
    rows = []
    for kind, name, args in runs:
        done = subprocess.run([sys.executable, "-m", "openvlthinker.cli", "serve", "--run-dir", str(tmp / "cli-run"),
                               "--port", "0", *args], capture_output=True, text=True, timeout=300,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"})
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        rows.append((kind, name, f"exit {done.returncode}", lines[-1] if lines else done.stdout.strip()[-160:]))
    return rows


def table(rows: list[tuple[str, str, str, str]]) -> str:
    out = ["| class | input | answer | message |", "|---|---|---|---|"]
    for kind, name, answer, text in rows:
        text = " ".join(text.split()).replace("|", "\\|")
        out.append(f"| {kind} | {name} | {answer} | {text[:250] + ('…' if len(text) > 250 else '')} |")
    return "\n".join(out)


def main() -> int:
    from openvlthinker.models import DEFAULT_MODEL
    from serve.launcher import ServerProcess

    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        adapters = tmp / "adapters"
        server = ServerProcess(["--run-dir", str(tmp / "run"), "--api-key", API, "--admin-key", ADMIN,
                                "--adapters-dir", str(adapters), "--max-body-bytes", str(1 << 20),
                                "--max-image-bytes", "200000", "--log-level", "warning"], log_path=tmp / "serve.log")
        try:
            rows = http_rows(server.url, adapters, DEFAULT_MODEL)
            assert httpx.post(f"{server.url}/v1/chat/completions", json=chat(), timeout=60,
                              headers={"Authorization": f"Bearer {API}"}).status_code == 200  # still serving
            alive = server.proc.poll() is None
        finally:
            server.stop()
        rows += cli_rows(tmp)
        rows = [(kind, what, answer, text.replace(str(tmp), "$TMP")) for kind, what, answer, text in rows]
    print(table(rows))
    fives = [row for row in rows if row[2].startswith("5")]
    print(f"\n{len(rows)} bad inputs; answers of 5xx: {len(fives)}; the gateway served on afterwards: {alive}")
    return 1 if fives or not alive else 0


if __name__ == "__main__":
    sys.exit(main())
