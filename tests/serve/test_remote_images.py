"""Remote images and SSRF: which addresses the gateway refuses to fetch from, in every spelling and on
every redirect hop, and the operator's allowance for named networks.

The only servers a test may contact are on loopback, which the fetcher refuses by default; so the
tests that load an image allow 127.0.0.1/32, and prove the refusals against loopback addresses
outside that allowance (127.0.0.2, ::1), which are refused before anything connects.
"""

import asyncio
import io
import ipaddress
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from hypothesis import given, settings, strategies as st
from PIL import Image

from serve.errors import APIError
from serve.images import ImageLimits, load_image_url
from serve.remote_images import parse_ip_literal, parse_networks, refusal_reason

PARAM = "messages[0].content[0].image_url.url"
LOOPBACK_ONLY = ("127.0.0.1/32",)


@pytest.mark.parametrize("address, reason", [
    ("127.0.0.1", "loopback"), ("127.255.0.9", "loopback"), ("10.1.2.3", "private"), ("172.16.0.1", "private"),
    ("192.168.1.1", "private"), ("169.254.169.254", "link-local"), ("169.254.0.1", "link-local"),
    ("224.0.0.1", "multicast"), ("239.1.1.1", "multicast"), ("240.0.0.1", "reserved"), ("0.0.0.0", "unspecified"),
    ("0.1.2.3", "private"), ("100.64.0.1", "not publicly routable"), ("192.0.2.7", "private"),
    ("255.255.255.255", "reserved"), ("::1", "loopback"), ("::", "unspecified"), ("fe80::1", "link-local"),
    ("fc00::1", "private"), ("fd12:3456::1", "private"), ("ff02::1", "multicast"), ("fec0::1", "site-local"),
    ("2001:db8::1", "private"), ("::ffff:127.0.0.1", "loopback address embedded"),
    ("::ffff:169.254.169.254", "link-local address (this includes cloud metadata endpoints) embedded"),
    ("::ffff:10.0.0.1", "private-network address embedded"), ("64:ff9b::7f00:1", "loopback address embedded"),
    ("2002:7f00:1::", "loopback address embedded"), ("2002:a9fe:a9fe::", "link-local"),
])
def test_non_public_addresses_are_refused_with_their_kind(address, reason):
    found = refusal_reason(ipaddress.ip_address(address))
    assert found is not None and reason in found, (address, found)


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111",
                                     "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::"])
def test_public_addresses_pass(address):
    assert refusal_reason(ipaddress.ip_address(address)) is None


def test_allowed_networks_let_their_addresses_through_and_no_others():
    allowed = parse_networks(["127.0.0.1/32", "10.0.0.0/8", "fd00::/8"])
    for address in ("127.0.0.1", "10.9.9.9", "fd00::5", "::ffff:127.0.0.1", "::ffff:10.1.1.1"):
        assert refusal_reason(ipaddress.ip_address(address), allowed) is None, address
    for address in ("127.0.0.2", "::1", "192.168.0.1", "169.254.169.254", "fe80::1"):
        assert refusal_reason(ipaddress.ip_address(address), allowed) is not None, address
    with pytest.raises(ValueError, match="'10.0.0.0/33' is not an IP network"):
        parse_networks(["10.0.0.0/33"])


@pytest.mark.parametrize("host, address", [
    ("127.0.0.1", "127.0.0.1"), ("2130706433", "127.0.0.1"), ("0x7f.1", "127.0.0.1"), ("0x7f000001", "127.0.0.1"),
    ("017700000001", "127.0.0.1"), ("0177.0.0.1", "127.0.0.1"), ("127.1", "127.0.0.1"), ("127.0.1", "127.0.0.1"),
    ("0", "0.0.0.0"), ("0xa9.0xfe.0xa9.0xfe", "169.254.169.254"), ("[::1]", "::1"), ("::ffff:127.0.0.1", "::ffff:7f00:1"),
    ("example.com", None), ("256.1", None), ("1.2.3.4.5", None), ("08.1", None), ("1.2.3.256", None), ("", None),
])
def test_ip_spellings_are_read_as_inet_aton_reads_them(host, address):
    parsed = parse_ip_literal(host)
    assert (str(parsed) if parsed else None) == address


def _spell(n: int, base: str) -> str:
    return {"dec": str(n), "hex": hex(n), "oct": "0" + oct(n)[2:] if n else "0"}[base]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 255), min_size=3, max_size=3), st.integers(0, 255),
       st.integers(1, 4), st.lists(st.sampled_from(["dec", "hex", "oct"]), min_size=4, max_size=4))
def test_every_inet_aton_spelling_agrees_with_the_c_library(head, tail, parts, bases):
    """Whatever way an address is written, it is the address the resolver would connect to."""
    octets = head + [tail]
    value = int.from_bytes(bytes(octets), "big")
    # n parts: the first n-1 are octets, the last holds the remaining bytes
    fields = octets[:parts - 1] + [value & ((1 << (8 * (5 - parts))) - 1)]
    host = ".".join(_spell(n, b) for n, b in zip(fields, bases))
    assert parse_ip_literal(host) == ipaddress.IPv4Address(socket.inet_aton(host))


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_an_ipv4_address_and_its_mapped_ipv6_form_get_the_same_answer(n):
    v4 = ipaddress.IPv4Address(n)
    v6 = ipaddress.IPv6Address(f"::ffff:{v4}")
    assert (refusal_reason(v4) is None) == (refusal_reason(v6) is None)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16",
                        "224.0.0.0/4", "240.0.0.0/4", "0.0.0.0/8", "fc00::/7", "fe80::/10", "ff00::/8"]),
       st.integers(0, 2**128 - 1))
def test_every_address_of_a_refused_range_is_refused(network, offset):
    net = ipaddress.ip_network(network)
    address = net[offset % net.num_addresses]
    assert refusal_reason(address) is not None
    assert refusal_reason(address, (net,)) is None  # and allowing the range lets each one through


# ------------------------------------------------------------------------ fetching over HTTP

def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 8), "blue").save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def images():
    """A loopback HTTP server: /ok.png, /to?url=U (302 to U), /loop (redirects to itself); it records hosts."""
    png, seen = _png(), []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            seen.append((self.path, self.headers.get("Host")))
            if self.path.startswith("/to?url="):
                self.send_response(302)
                self.send_header("Location", self.path.split("=", 1)[1])
                self.end_headers()
            elif self.path == "/loop":
                self.send_response(307)
                self.send_header("Location", "/loop")
                self.end_headers()
            elif self.path == "/ok.png":
                self.send_response(200)
                self.send_header("Content-Length", str(len(png)))
                self.end_headers()
                self.wfile.write(png)
            else:
                self.send_response(404)
                self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    server.seen = seen
    yield server
    server.shutdown()


def _limits(allow=()):
    return ImageLimits(max_bytes=100_000, max_pixels=10**6, max_images=4, allow_remote=True, remote_timeout_s=5,
                       remote_allow_networks=allow)


def _refused(url: str, allow=()) -> APIError:
    with pytest.raises(APIError) as info:
        asyncio.run(load_image_url(url, _limits(allow), PARAM))
    assert info.value.status == 400 and info.value.param == PARAM, info.value.message
    return info.value


def test_a_loopback_url_is_refused_by_default_and_loads_when_allowed(images):
    port = images.server_address[1]
    before = len(images.seen)
    err = _refused(f"http://127.0.0.1:{port}/ok.png")
    assert err.code == "image_url_refused" and "127.0.0.1 is a loopback address" in err.message
    assert "--remote-image-allow-network" in err.message
    assert len(images.seen) == before  # refused before connecting
    image = asyncio.run(load_image_url(f"http://127.0.0.1:{port}/ok.png", _limits(LOOPBACK_ONLY), PARAM))
    assert image.image.size == (16, 8)


@pytest.mark.parametrize("spelling", ["2130706433", "0x7f.1", "017700000001", "127.1", "[::ffff:127.0.0.1]",
                                      "[::1]", "[::]", "0", "localhost", "[64:ff9b::7f00:1]"])
def test_every_spelling_of_a_local_address_is_refused(images, spelling):
    port = images.server_address[1]
    before = len(images.seen)
    err = _refused(f"http://{spelling}:{port}/ok.png")
    assert err.code == "image_url_refused", err.message
    assert len(images.seen) == before


def test_redirects_are_checked_at_every_hop(images):
    port = images.server_address[1]
    base = f"http://127.0.0.1:{port}"
    # allowed -> allowed: followed
    assert asyncio.run(load_image_url(f"{base}/to?url={base}/ok.png", _limits(LOOPBACK_ONLY), PARAM)).image.size == (16, 8)
    for target in (f"http://127.0.0.2:{port}/ok.png", f"http://[::1]:{port}/ok.png", f"http://0x7f.2:{port}/ok.png",
                   f"http://169.254.169.254/latest/meta-data/"):
        err = _refused(f"{base}/to?url={target}", LOOPBACK_ONLY)
        assert err.code == "image_url_refused" and "after a redirect to" in err.message, err.message
    # a redirect through a second allowed hop to a refused one is refused too
    err = _refused(f"{base}/to?url={base}/to?url=http://10.0.0.1/x.png", LOOPBACK_ONLY)
    assert err.code == "image_url_refused" and "10.0.0.1 is a private-network address" in err.message
    err = _refused(f"{base}/to?url=file:///etc/passwd", LOOPBACK_ONLY)
    assert err.code == "invalid_image_url" and "redirected to 'file:" in err.message
    err = _refused(f"{base}/loop", LOOPBACK_ONLY)
    assert err.code == "image_fetch_failed" and "redirected more than 3 times" in err.message


def test_the_request_keeps_its_host_name_while_connecting_to_the_checked_address(images):
    port = images.server_address[1]
    asyncio.run(load_image_url(f"http://0x7f.1:{port}/ok.png", _limits(LOOPBACK_ONLY), PARAM))
    assert images.seen[-1] == ("/ok.png", f"0x7f.1:{port}")


def test_the_gateway_answers_400_naming_the_part_and_keeps_serving(make_client, images):
    port = images.server_address[1]
    url = f"http://127.0.0.1:{port}/ok.png"
    body = {"model": "openvlthinker", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "what is it?"}]}]}
    refusing = make_client(allow_remote_images=True)
    resp = refusing.post("/v1/chat/completions", json=body)
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["param"] == PARAM and error["code"] == "image_url_refused" and "loopback" in error["message"]
    assert refusing.get("/health").status_code == 200
    allowing = make_client(allow_remote_images=True, remote_image_allow_networks=["127.0.0.1/32"])
    assert allowing.post("/v1/chat/completions", json=body).status_code == 200
