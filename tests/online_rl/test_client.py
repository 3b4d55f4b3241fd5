"""The loop's HTTP client rides out an overloaded or restarting gateway, against a real loopback server
(a stdlib stand-in for the gateway: the retry policy is the client's, whatever answers)."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from online_rl.client import GatewayClient, GatewayError
from serve.launcher import free_port


class Scripted(BaseHTTPRequestHandler):
    """Answers each request with the next (status, headers) of the server's script, then 200 {"ok": n}."""

    def do_GET(self):
        server = self.server
        server.calls += 1
        status, headers = server.script.pop(0) if server.script else (200, {})
        body = json.dumps({"ok": server.calls} if status == 200 else {"error": {"message": "busy"}}).encode()
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def serve(port, script):
    server = ThreadingHTTPServer(("127.0.0.1", port), Scripted)
    server.calls, server.script = 0, list(script)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_503_is_retried_after_retry_after_and_then_succeeds():
    server = serve(free_port(), [(503, {"Retry-After": "0"}), (503, {"Retry-After": "0"})])
    try:
        client = GatewayClient(f"http://127.0.0.1:{server.server_port}", "k", "adm", retry_s=30)
        assert client.adapters() == {"ok": 3} and server.calls == 3
    finally:
        server.shutdown()


def test_a_gateway_that_is_not_up_yet_is_waited_for():
    port = free_port()
    servers = []
    threading.Timer(1.0, lambda: servers.append(serve(port, []))).start()  # "restarting": up in a second
    try:
        client = GatewayClient(f"http://127.0.0.1:{port}", "k", "adm", retry_s=30)
        assert client.adapters() == {"ok": 1}
    finally:
        time.sleep(0.1)
        for server in servers:
            server.shutdown()


def test_retries_end_after_retry_s_with_an_error_naming_the_call():
    client = GatewayClient(f"http://127.0.0.1:{free_port()}", "k", "adm", retry_s=1)
    with pytest.raises(RuntimeError, match="GET /v1/adapters: the gateway .* refused connections for 1 s"):
        client.adapters()
    server = serve(free_port(), [(503, {"Retry-After": "0"})] * 100)
    try:
        client = GatewayClient(f"http://127.0.0.1:{server.server_port}", "k", "adm", retry_s=1)
        with pytest.raises(GatewayError) as info:
            client.adapters()
        assert info.value.status == 503 and server.calls >= 2
    finally:
        server.shutdown()


def test_client_errors_are_not_retried():
    server = serve(free_port(), [(400, {}), (401, {})])
    try:
        client = GatewayClient(f"http://127.0.0.1:{server.server_port}", "k", "adm", retry_s=30)
        with pytest.raises(GatewayError, match="GET /v1/adapters -> 400") as info:
            client.adapters()
        assert info.value.refused_request and server.calls == 1
        with pytest.raises(GatewayError) as info:
            client.adapters()
        assert not info.value.refused_request  # a wrong key: no other request would do better
    finally:
        server.shutdown()
