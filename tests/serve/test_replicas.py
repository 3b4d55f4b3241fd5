"""Two gateway replicas on one PostgreSQL: a promote and a rollback through one are served by both, no request fails.

Both processes run the real transformers engine on the tiny model, share the adapters folder, the
images folder and the database, and poll the alias row every POLL_S seconds. While clients send
requests to both, replica A loads and promotes a version, then rolls back; B must answer with the
alias' version within the bound (one poll interval plus the time to load the version, plus slack for
two processes on a small shared machine), and every request of the clients must succeed. A third
replica started afterwards serves the recorded alias from its first answer.
"""

import threading
import time

import httpx
import pytest

from tests.serve.postgres import postgres_server, postgres_url  # noqa: F401 - fixtures

ADMIN = "adm-replicas"
POLL_S = 0.5
SLACK_S = 5.0  # CPU contention: two servers and the clients on two cores


def _admin(server, method, path, **kw):
    response = httpx.request(method, f"{server.url}/v1{path}", headers={"Authorization": f"Bearer {ADMIN}"},
                             timeout=60, **kw)
    assert response.status_code == 200, response.text
    return response.json()


def _ask(client, **kw):
    return client.chat.completions.create(model="openvlthinker", max_tokens=2, temperature=0,
                                          messages=[{"role": "user", "content": "Count the circles."}], **kw)


def _until_serving(clients, version, since, bound):
    """Seconds from `since` until each client's answers carry `version`; fails past `bound`."""
    waited = {}
    for name, client in clients.items():
        while _ask(client).adapter_version != version:
            assert time.monotonic() - since < bound, f"replica {name} still not serving {version} after {bound:.1f} s"
            time.sleep(0.05)
        waited[name] = time.monotonic() - since
    return waited


@pytest.mark.slow
def test_two_replicas_serve_one_alias_through_promote_and_rollback(tmp_path, tiny_model, h, postgres_url):  # noqa: F811
    from tests.serve.conftest import Server

    adapters, images = tmp_path / "adapters", tmp_path / "images"
    h.write_adapter(tiny_model, adapters / "policy-v0001", seed=1)
    h.write_adapter(tiny_model, adapters / "policy-v0002", seed=2, parent="v0001")
    flags = ["--store", postgres_url, "--adapters-dir", str(adapters), "--images-dir", str(images),
             "--admin-key", ADMIN, "--registry-poll-s", str(POLL_S), "--max-batch", "4"]
    a = Server(tiny_model, tmp_path / "a", *flags)
    servers = [a]
    try:
        b = Server(tiny_model, tmp_path / "b", *flags)
        servers.append(b)
        clients = {"a": a.client(max_retries=0, timeout=60), "b": b.client(max_retries=0, timeout=60)}
        answered, failed, stop = [], [], threading.Event()

        def hammer(name):
            while not stop.is_set():
                try:
                    answered.append((name, _ask(clients[name]).adapter_version))
                except Exception as exc:  # noqa: BLE001 - counted, the test fails on any
                    failed.append((name, repr(exc)))

        threads = [threading.Thread(target=hammer, args=(name,)) for name in ("a", "b")]
        for thread in threads:
            thread.start()
        try:
            started = time.monotonic()
            _admin(a, "POST", "/adapters/load", json={"version": "v0001"})
            load_s = time.monotonic() - started
            bound = POLL_S + load_s + SLACK_S
            promoted = time.monotonic()
            assert _admin(a, "POST", "/adapters/promote", json={"version": "v0001"})["promoted"] == "v0001"
            first = _until_serving(clients, "v0001", promoted, bound)

            _admin(a, "POST", "/adapters/load", json={"version": "v0002"})
            _admin(a, "POST", "/adapters/promote", json={"version": "v0002"})
            _until_serving(clients, "v0002", time.monotonic(), bound)
            rolled = time.monotonic()
            assert _admin(a, "POST", "/adapters/rollback")["promoted"] == "v0001"
            back = _until_serving(clients, "v0001", rolled, POLL_S + SLACK_S)  # v0001 is loaded on both already
            assert _admin(a, "POST", "/adapters/rollback")["promoted"] is None
            _until_serving(clients, None, time.monotonic(), POLL_S + SLACK_S)
            # B lists what A made it serve: v0001 and v0002 loaded, the base promoted
            listed = {row["version"]: row for row in _admin(b, "GET", "/adapters")["data"]}
            assert listed["v0001"]["loaded"] and listed["v0002"]["loaded"] and not listed["v0001"]["promoted"]
        finally:
            stop.set()
            for thread in threads:
                thread.join(60)
        assert failed == [], failed[:5]
        seen = {(name, version) for name, version in answered}
        # the clients' own requests (not only the probes) were answered by the promoted version on both replicas
        assert {("a", None), ("b", None), ("a", "v0001"), ("b", "v0001")} <= seen and len(answered) > 20
        print(f"load {load_s:.2f} s, promote seen by a/b after {first['a']:.2f}/{first['b']:.2f} s, "
              f"rollback after {back['a']:.2f}/{back['b']:.2f} s, {len(answered)} requests, 0 failed")

        # an image posted through A is stored once, in the shared folder, and readable through B
        png = h.png_bytes(48, 48, "blue")
        made = clients["a"].chat.completions.create(model="openvlthinker", max_tokens=2, temperature=0,
                                                    messages=h.image_message("How many circles?", png))
        stored = _admin(b, "GET", f"/interactions/{made.id}")["data"][0]
        sha = stored["request"]["messages"][0]["content"][0]["sha256"]
        image = httpx.get(f"{b.url}/v1/images/{sha}", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30)
        assert image.status_code == 200 and image.content == png
        assert (images / sha[:2] / sha).read_bytes() == png

        # a replica started later serves the alias the database records from its first answer
        _admin(a, "POST", "/adapters/promote", json={"version": "v0002"})
        c = Server(tiny_model, tmp_path / "c", *flags)
        servers.append(c)
        assert _ask(c.client(max_retries=0, timeout=60)).adapter_version == "v0002"
    finally:
        for server in servers:
            server.stop()
