"""Whose feedback trains: each feedback row records a sha256 prefix of its key (never the key) and whether
that key is trusted; the exports show it, the RL loop's harvest skips untrusted rows, and a database
from before these columns still opens."""

import hashlib
import sqlite3

import httpx
import pytest

from serve.keys import feedback_trusted, key_hash
from serve.store import Store

from .test_store import row


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:16]


@pytest.mark.parametrize("token, keys, host, trusted", [
    ("anything", [], "127.0.0.1", True), (None, [], "::1", True),  # loopback, no list: one machine's users
    ("anything", [], "0.0.0.0", False), (None, [], "10.0.0.5", False),  # reachable, no list: nobody
    ("team", ["team"], "0.0.0.0", True), ("public", ["team"], "0.0.0.0", False),
    ("public", ["team"], "127.0.0.1", False), (None, ["team"], "127.0.0.1", False),  # a list wins everywhere
    ("team2", ["team", "team2"], "0.0.0.0", True), ("tea", ["team"], "0.0.0.0", False),
])
def test_who_is_trusted(token, keys, host, trusted):
    assert feedback_trusted(token, keys, host) is trusted


def test_key_hash_is_a_sha256_prefix():
    assert key_hash("s3cret") == _hash("s3cret") and len(key_hash("s3cret")) == 16 and key_hash(None) is None


def _ask(client, key):
    resp = client.post("/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                       json={"model": "openvlthinker", "messages": [{"role": "user", "content": "How many?"}]})
    assert resp.status_code == 200, resp.text
    return resp.json()["id"]


def _feedback(client, key, **body):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    resp = client.post("/v1/feedback", headers=headers, json=body)
    assert resp.status_code == 200, resp.text


def test_feedback_rows_record_the_key_hash_and_trust_and_the_exports_show_them(make_client, tmp_path):
    client = make_client(host="0.0.0.0", api_key="public-key-1", trusted_feedback_keys=["team-key-2"], admin_key="adm")
    cid = _ask(client, "public-key-1")
    _feedback(client, "public-key-1", id=cid, thumbs="up")
    _feedback(client, "team-key-2", id=cid, correction="3")
    admin = {"Authorization": "Bearer adm"}
    rows = client.get("/v1/feedback", headers=admin).json()["data"]
    assert [(r["key_hash"], r["trusted"]) for r in rows] == [(_hash("public-key-1"), False), (_hash("team-key-2"), True)]
    stored = client.get(f"/v1/interactions/{cid}", headers=admin).json()["data"][0]["feedback"]
    assert [(f["thumbs"], f["trusted"]) for f in stored] == [("up", False), (None, True)]
    raw = (tmp_path / "run0" / "serve.db").read_bytes() + b"".join(
        p.read_bytes() for p in (tmp_path / "run0").glob("serve.db-wal"))
    assert b"public-key-1" not in raw and b"team-key-2" not in raw  # hashed, never the key


def test_on_loopback_without_a_list_everyone_is_trusted(make_client):
    client = make_client(admin_key="adm")
    cid = _ask(client, "whatever")
    _feedback(client, "whatever", id=cid, rating=4)
    _feedback(client, None, id=cid, score=0.5)
    rows = client.get("/v1/feedback", headers={"Authorization": "Bearer adm"}).json()["data"]
    assert [(r["key_hash"], r["trusted"]) for r in rows] == [(_hash("whatever"), True), (None, True)]


def test_a_database_from_before_the_trust_columns_still_opens(tmp_path):
    db = tmp_path / "serve.db"
    store = Store(f"sqlite:///{db}", tmp_path / "images")
    store.add_interactions([row()])
    store.add_feedback("chatcmpl-1", 0, thumbs="up")
    store.close()
    with sqlite3.connect(db) as conn:  # what an older release's schema looked like: no key_hash, no trusted,
        conn.execute("DROP TABLE schema_version")  # and no version row
        conn.execute("ALTER TABLE feedback DROP COLUMN key_hash")
        conn.execute("ALTER TABLE feedback DROP COLUMN trusted")
        assert {r[1] for r in conn.execute("PRAGMA table_info(feedback)")} == {
            "seq", "id", "interaction_seq", "created", "thumbs", "rating", "score", "correction", "comment"}
    for _ in range(2):  # migrating twice is a no-op
        store = Store(f"sqlite:///{db}", tmp_path / "images")
        store.add_feedback("chatcmpl-1", 0, rating=5, key_hash=_hash("k"), trusted=True)
        items, _, _ = store.list_feedback()
        store.close()
    old, *new = items
    assert (old["thumbs"], old["key_hash"], old["trusted"]) == ("up", None, None)  # sender unknown: not trained on
    assert [(f["rating"], f["trusted"]) for f in new] == [(5, True), (5, True)]


def test_the_loop_harvests_only_trusted_feedback(start_server):
    from online_rl.client import GatewayClient
    from online_rl.harvest import harvest

    server = start_server("--api-key", "public", "--trusted-feedback-keys", "team", "--admin-key", "adm")
    url = server.url

    def ask(key):
        body = {"model": "openvlthinker", "max_tokens": 8, "messages": [{"role": "user", "content": "How many?"}]}
        return httpx.post(f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"},
                          timeout=60).json()["id"]

    def feedback(key, **body):
        resp = httpx.post(f"{url}/v1/feedback", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30)
        assert resp.status_code == 200, resp.text

    mine, theirs = ask("team"), ask("public")
    feedback("team", id=mine, thumbs="down")
    feedback("team", id=mine, correction="2")
    feedback("public", id=theirs, thumbs="up")  # anyone with the API key: stored, not trained on
    feedback("public", id=theirs, correction="7")
    found = harvest(GatewayClient(url, "public", "adm"), None, None, current_version=None, max_staleness=4)
    assert [r.reward for r in found.logged] == [0.0] and [r.interaction_id for r in found.logged] == [mine]
    assert len(found.prompts) == 1  # the trusted correction only
    assert found.feedback_cursor  # the untrusted rows are read past, not waited on
