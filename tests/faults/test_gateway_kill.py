"""kill -9 of the gateway while clients write: everything it acknowledged is in the store after a restart.

Six clients send chat completions (half of them streamed) and feedback on the answers they got,
and note each id the gateway acknowledged: a 200 with an interaction id (for a stream, the
interaction id of a stream that reached `data: [DONE]`), a 200 with a feedback id. Once enough
are acknowledged the gateway is killed with SIGKILL, mid-traffic, and started again on the same
run folder: every acknowledged interaction and feedback row must be there, the SQLite file must
pass its integrity check, and the engine's child process must not outlive its gateway.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time

import httpx
import pytest

CLIENTS = 6


def _client(url: str, k: int, stop: threading.Event, acked: dict[str, list[str]], failures: list[str]) -> None:
    stream = k % 2 == 1
    body = {"model": "openvlthinker", "max_tokens": 6, "stream": stream,
            "messages": [{"role": "user", "content": f"How many circles are there? ({k})"}]}
    with httpx.Client(base_url=url, timeout=30) as http:
        while not stop.is_set():
            try:
                if stream:
                    with http.stream("POST", "/v1/chat/completions", json=body) as resp:
                        lines = [line for line in resp.iter_lines() if line.startswith("data: ")]
                    done = resp.status_code == 200 and lines and lines[-1] == "data: [DONE]"
                    cid = json.loads(lines[0][6:])["id"] if done else None
                else:
                    resp = http.post("/v1/chat/completions", json=body)
                    cid = resp.json()["id"] if resp.status_code == 200 else None
                if cid is None:
                    failures.append(f"chat {resp.status_code}")
                    continue
                acked["interactions"].append(cid)
                fb = http.post("/v1/feedback", json={"id": cid, "thumbs": "up" if k % 3 else "down"})
                if fb.status_code == 200:
                    acked["feedback"].append(fb.json()["id"])
                else:
                    failures.append(f"feedback {fb.status_code}")
            except (httpx.TransportError, json.JSONDecodeError, IndexError):
                # the gateway died under this request: nothing was acknowledged for it
                if stop.wait(0.05):
                    return


@pytest.mark.slow
def test_kill_9_during_writes_loses_no_acknowledged_interaction_or_feedback(gateway, tmp_path):
    run = tmp_path / "run"
    server = gateway(run)
    engine = server.engine_pids()
    assert engine, "no engine process found beside the gateway"
    acked: dict[str, list[str]] = {"interactions": [], "feedback": []}
    failures: list[str] = []
    stop = threading.Event()
    threads = [threading.Thread(target=_client, args=(server.url, k, stop, acked, failures)) for k in range(CLIENTS)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (len(acked["interactions"]) < 40 or len(acked["feedback"]) < 20):
        time.sleep(0.05)
    server.kill()  # SIGKILL, with requests in flight
    killed_with = {kind: len(ids) for kind, ids in acked.items()}
    stop.set()
    for t in threads:
        t.join(30)
    assert not failures, failures[:5]  # before the kill every request was answered 200
    assert killed_with["interactions"] >= 40 and killed_with["feedback"] >= 20, killed_with
    deadline = time.monotonic() + 10
    while any(server.alive(pid) for pid in engine) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(server.alive(pid) for pid in engine), "the engine process outlived its gateway"

    db = sqlite3.connect(run / "serve.db")  # what the next start opens, as the crash left it
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    db.close()
    again = gateway(run)
    stored = {row["id"] for row in again.export("interactions")}
    feedback = {row["id"] for row in again.export("feedback")}
    lost = {"interactions": set(acked["interactions"]) - stored, "feedback": set(acked["feedback"]) - feedback}
    print(f"\nacknowledged before the kill: {killed_with}; after the restart the store holds {len(stored)} "
          f"interactions and {len(feedback)} feedback rows; lost: {({k: len(v) for k, v in lost.items()})}")
    assert lost == {"interactions": set(), "feedback": set()}
    assert again.chat().status_code == 200  # and it serves on the same store
