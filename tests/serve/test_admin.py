"""Admin routes in-process (scripted engine): adapter lifecycle over HTTP, interaction export errors."""

import hashlib
import json
import os

ADMIN = {"Authorization": "Bearer adm"}


def fake_adapter(root, version, parent=None):
    folder = root / f"policy-{version}"
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text('{"peft_type": "LORA"}')
    (folder / "adapter_model.safetensors").write_bytes(os.urandom(32))
    sums = {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in folder.iterdir()}
    (folder / "manifest.json").write_text(json.dumps({"parent": parent, "sha256": sums, "metrics": {"reward": 0.7}}))


def test_adapter_lifecycle_over_http(make_client, tmp_path):
    adapters = tmp_path / "adapters"
    fake_adapter(adapters, "v0001")
    fake_adapter(adapters, "v0002", parent="v0001")
    client = make_client(admin_key="adm", adapters_dir=str(adapters))
    post = lambda path, body=None: client.post(f"/v1/adapters/{path}", json=body, headers=ADMIN)  # noqa: E731

    listed = client.get("/v1/adapters", headers=ADMIN).json()
    assert [a["version"] for a in listed["data"]] == ["v0001", "v0002"] and listed["promoted"] is None
    assert listed["data"][1]["parent"] == "v0001" and listed["data"][1]["metrics"] == {"reward": 0.7}

    loaded = post("load", {"version": "v0001"})
    assert loaded.status_code == 200 and loaded.json()["loaded"] and loaded.json()["name"] == "openvlthinker@v0001"
    assert post("load", {"path": "policy-v0002"}).status_code == 200
    ids = [m["id"] for m in client.get("/v1/models").json()["data"]]
    assert ids == ["scripted-model", "openvlthinker", "openvlthinker@v0001", "openvlthinker@v0002"]

    assert post("promote", {"version": "v0001"}).json()["model"] == "openvlthinker@v0001"
    r = client.post("/v1/chat/completions", json={"model": "openvlthinker", "messages": [{"role": "user", "content": "hi"}]})
    assert r.json()["model"] == "openvlthinker@v0001" and r.json()["adapter_version"] == "v0001"
    pinned = client.post("/v1/chat/completions", json={"model": "openvlthinker@v0002",
                                                       "messages": [{"role": "user", "content": "hi"}]}).json()
    assert pinned["adapter_version"] == "v0002"
    assert client.app.state.engine.requests[-1].adapter.startswith("v0002-")
    assert client.get("/health").json()["promoted"] == "v0001"

    assert post("unload", {"version": "v0001"}).status_code == 409  # promoted
    assert post("promote", {"version": "v0002"}).status_code == 200
    assert post("rollback").json()["promoted"] == "v0001"
    assert post("unload", {"version": "v0002"}).json()["unloaded"] == "v0002"
    assert post("rollback").json()["model"] == "scripted-model"  # back to base
    assert post("rollback").status_code == 409
    text = client.get("/metrics").text
    assert 'openvlthinker_version_requests_total{version="v0001"} 1.0' in text


def test_admin_input_errors(make_client, tmp_path):
    adapters = tmp_path / "adapters"
    fake_adapter(adapters, "v0001")
    (adapters / "policy-v0001" / "adapter_model.safetensors").write_bytes(b"changed after publishing")
    client = make_client(admin_key="adm", adapters_dir=str(adapters))
    post = lambda path, body=None: client.post(f"/v1/adapters/{path}", json=body, headers=ADMIN)  # noqa: E731
    for body, status, param in [({"path": "/etc"}, 400, "path"), ({"path": "../x"}, 400, "path"),
                                ({"path": "policy-v0001/../../.."}, 400, "path"), ({"version": "v0404"}, 404, "version"),
                                ({"version": "v0001"}, 400, "version"), ({}, 400, None),
                                ({"version": "v1", "path": "p"}, 400, None)]:
        r = post("load", body)
        assert r.status_code == status and r.json()["error"]["param"] == param, (body, r.text)
    assert post("load", {"version": "v0001"}).json()["error"]["code"] == "adapter_checksum_mismatch"
    assert post("promote", {"version": "v0001"}).status_code == 404
    assert post("unload", {"version": "v0001"}).status_code == 404
    assert client.get("/v1/interactions?after=abc", headers=ADMIN).json()["error"]["param"] == "after"
    assert client.get("/v1/interactions?limit=0", headers=ADMIN).json()["error"]["param"] == "limit"
    assert client.get("/v1/interactions/chatcmpl-x", headers=ADMIN).status_code == 404
    assert client.get("/v1/images/xyz", headers=ADMIN).json()["error"]["param"] == "sha256"
    assert client.get("/v1/images/" + "0" * 64, headers=ADMIN).status_code == 404


def test_server_info_says_what_is_served(make_client, tmp_path):
    adapters = tmp_path / "elsewhere" / "adapters"
    adapters.mkdir(parents=True)
    client = make_client(admin_key="adm", adapters_dir=str(adapters), served_name="thinker",
                         store=f"sqlite:///{tmp_path / 'x.db'}")
    info = client.get("/v1/server", headers=ADMIN).json()
    assert info["model"] == "scripted-model" and info["model_path"] is None  # a name, not a local folder
    assert info["engine"] == "transformers" and info["served_name"] == "thinker"
    assert info["adapters_dir"] == str(adapters.resolve()) and info["store"].endswith("x.db")
    assert info["probe_visible"] is None and info["images"] is None  # no folder to tell from
    (adapters / ".probe-0123abcd").write_text("")
    assert client.get("/v1/server?probe=.probe-0123abcd", headers=ADMIN).json()["probe_visible"] is True
    assert client.get("/v1/server?probe=.probe-ffffffff", headers=ADMIN).json()["probe_visible"] is False
    for bad in ("../x", ".probe-XYZ", "policy-v0001", ".probe-12"):
        r = client.get("/v1/server", params={"probe": bad}, headers=ADMIN)
        assert r.status_code == 400 and r.json()["error"]["param"] == "probe", bad
    assert client.get("/v1/server").status_code == 401  # admin only, like the other admin routes


def test_server_info_tells_a_vision_language_model_from_a_name_without_a_folder(tmp_path):
    from openvlthinker.models import DEFAULT_MODEL
    from serve.admin import _reads_images

    assert _reads_images(DEFAULT_MODEL) is True
    assert _reads_images("scripted-model") is None and _reads_images(str(tmp_path)) is None

