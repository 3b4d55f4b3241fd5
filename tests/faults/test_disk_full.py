"""The store's disk full: a 503 naming the storage, nothing acknowledged lost, and service again once there is room.

Two ways of really filling it, both without a stand-in for SQLite:
- a small filesystem: an 8 MiB tmpfs mounted for the test holds the gateway's run folder (SQLite
  file, its WAL, the image files), and a filler file takes every byte left, so SQLite's commit
  and the image writes meet ENOSPC as on a real full disk. Mounting needs root (CI runs as root);
  elsewhere this test is skipped and the next one still runs.
- SQLite's `PRAGMA max_page_count`, set on every connection of a gateway in this process (the real
  engine on the tiny model), caps the database file at the pages it has: a commit that needs one
  more page fails with SQLITE_FULL ("database or disk is full"), as on a full disk. Lifting the
  cap is the space coming back.
"""

from __future__ import annotations

import base64
import errno
import io
import sqlite3
import subprocess
import time
from pathlib import Path

import httpx
import pytest


def _png(seed: int) -> str:
    from PIL import Image

    img = Image.new("RGB", (48, 48), (seed * 37 % 256, seed * 91 % 256, 200))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _body(k: int) -> dict:
    """A chat request with an image of its own (so every request writes an image file too)."""
    return {"model": "openvlthinker", "max_tokens": 6, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": _png(k)}}, {"type": "text", "text": f"How many circles? {k}"}]}]}


def _fill(path: Path) -> int:
    """Write zeros to `path` until its filesystem is full; the bytes written."""
    written = 0
    with open(path, "wb", buffering=0) as fh:
        try:
            while True:
                written += fh.write(b"\0" * 65536)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    return written


@pytest.fixture
def small_fs(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.strip()}); the max_page_count test still runs")
    yield mount
    for _ in range(20):  # the gateway's engine process may take a moment to let go of its files
        if subprocess.run(["umount", str(mount)], capture_output=True).returncode == 0:
            return
        time.sleep(0.25)
    subprocess.run(["umount", "--lazy", str(mount)], check=False)


def _is_store_full(resp: httpx.Response, where: Path) -> bool:
    if resp.status_code != 503:
        return False
    error = resp.json()["error"]
    return (error["code"] == "store_full" and str(where) in error["message"] and "full" in error["message"]
            and int(resp.headers["Retry-After"]) > 0)


@pytest.mark.slow
def test_a_full_filesystem_answers_503_naming_the_store_and_serves_again_when_freed(small_fs, gateway, tmp_path):
    run = small_fs / "run"
    server = gateway(run, log_dir=tmp_path)  # its log outside the small filesystem
    http = httpx.Client(base_url=f"{server.url}/v1", timeout=60)
    acked: list[str] = []
    for k in range(5):
        resp = http.post("/chat/completions", json=_body(k))
        assert resp.status_code == 200, resp.text
        acked.append(resp.json()["id"])
    assert http.post("/feedback", json={"id": acked[0], "thumbs": "up"}).status_code == 200
    filler = small_fs / "filler"
    _fill(filler)
    answers = []
    for k in range(5, 45):  # pages free inside the database file may still take a few
        resp = http.post("/chat/completions", json=_body(k))
        answers.append(resp)
        if resp.status_code == 200:
            acked.append(resp.json()["id"])
        elif len(answers) > 3 and all(_is_store_full(r, run) for r in answers[-3:]):
            break
    assert all(r.status_code == 200 or _is_store_full(r, run) for r in answers), [r.text for r in answers]
    assert _is_store_full(answers[-1], run), answers[-1].text
    print(f"\nfull: {answers[-1].json()['error']['message']}")
    feedback = http.post("/feedback", json={"id": acked[0], "rating": 5})
    assert feedback.status_code == 200 or _is_store_full(feedback, run), feedback.text
    assert httpx.get(f"{server.url}/health", timeout=10).status_code == 200  # the gateway itself is fine
    filler.unlink()  # the space comes back
    resp = http.post("/chat/completions", json=_body(99))
    assert resp.status_code == 200, resp.text
    acked.append(resp.json()["id"])
    assert http.post("/feedback", json={"id": resp.json()["id"], "thumbs": "down"}).status_code == 200
    http.close()
    stored = {row["id"] for row in server.export("interactions")}
    assert set(acked) <= stored, set(acked) - stored
    db = sqlite3.connect(run / "serve.db")
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    db.close()


@pytest.mark.slow
def test_a_database_at_its_page_cap_answers_503_naming_it_and_serves_again_when_lifted(tmp_path):
    from fastapi.testclient import TestClient
    from sqlalchemy import event

    from openvlthinker.models import DEFAULT_MODEL
    from serve.app import create_app
    from serve.config import ServeConfig
    from serve.engines.transformers.engine import TransformersEngine

    config = ServeConfig(model=DEFAULT_MODEL, run_dir=str(tmp_path / "run"), admin_key="adm")
    app = create_app(config, TransformersEngine(DEFAULT_MODEL, threads=1, process=False))
    with TestClient(app) as client:
        first = client.post("/v1/chat/completions", json=_body(0))
        assert first.status_code == 200, first.text
        store = app.state.store
        pages = store.pragma("page_count")

        def cap(dbapi_conn, _record):
            dbapi_conn.execute(f"PRAGMA max_page_count = {pages}")

        event.listen(store.engine, "connect", cap)
        store.engine.dispose()  # every connection from now on has the cap
        db, answers = Path(store.where), []
        for k in range(1, 30):  # the last page may still hold a row or two
            answers.append(client.post("/v1/chat/completions", json=_body(k)))
            if len(answers) >= 2 and all(_is_store_full(r, db) for r in answers[-2:]):
                break
        assert all(r.status_code == 200 or _is_store_full(r, db) for r in answers), [r.text for r in answers]
        assert _is_store_full(answers[-1], db), answers[-1].text
        stream = client.post("/v1/chat/completions", json={**_body(31), "stream": True})
        assert stream.status_code == 200 and '"code": "store_full"' in stream.text  # in-band, no [DONE]
        assert "[DONE]" not in stream.text
        before = store.count()
        event.remove(store.engine, "connect", cap)
        store.engine.dispose()  # the space comes back
        again = client.post("/v1/chat/completions", json=_body(40))
        assert again.status_code == 200, again.text
        assert store.count() == before + 1
        acked = [first.json()["id"], again.json()["id"]] + [r.json()["id"] for r in answers if r.status_code == 200]
        assert all(store.get_interaction(i) for i in acked)
