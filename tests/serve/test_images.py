"""Image decoding and limits: data URLs, base64, formats, byte and pixel caps, remote switch (the address
checks of remote fetches: test_remote_images.py)."""

import asyncio
import base64
import hashlib
import io
import os
import zlib
import struct

import pytest
from PIL import Image

from serve.errors import APIError
from serve.images import ImageLimits, decode_data_url, load_image_url, open_image

LIMITS = ImageLimits(max_bytes=200_000, max_pixels=512 * 512, max_images=4)


def load(url, limits=LIMITS):
    return asyncio.run(load_image_url(url, limits, "messages[0].content[0].image_url.url"))


def error(url, limits=LIMITS) -> APIError:
    with pytest.raises(APIError) as info:
        load(url, limits)
    assert info.value.status == 400 and info.value.param == "messages[0].content[0].image_url.url"
    return info.value


def encode(img, fmt="PNG"):
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def test_png_data_url_decodes_to_rgb_with_sha256(h):
    data = h.png_bytes(40, 30)
    out = load(h.data_url(data))
    assert out.image.mode == "RGB" and out.image.size == (40, 30)
    assert out.sha256 == hashlib.sha256(data).hexdigest() and out.data == data and out.format == "PNG"


@pytest.mark.parametrize("fmt, mode", [("JPEG", "RGB"), ("WEBP", "RGBA"), ("GIF", "P"), ("BMP", "L")])
def test_other_formats_and_modes(h, fmt, mode):
    data = encode(Image.new(mode, (20, 10)), fmt)
    out = load(h.data_url(data, f"image/{fmt.lower()}"))
    assert out.image.mode == "RGB" and out.image.size == (20, 10)


@pytest.mark.parametrize("url, code", [
    ("data:image/png;base64,!!!notbase64!!!", "invalid_base64"),
    ("data:image/png;base64,aGVsbG8gd29ybGQ=", "invalid_image"),  # "hello world": not an image
    ("data:image/png,rawbytes", "invalid_image_url"),
    ("data:text/plain;base64,aGVsbG8=", "invalid_image"),
    ("nodata", "invalid_image_url"),
    ("file:///etc/passwd", "invalid_image_url"),
    ("http://example.com/cat.png", "remote_images_disabled"),
])
def test_bad_urls_are_400_with_a_code(url, code):
    assert error(url).code == code


def test_truncated_png_is_400(h):
    data = h.png_bytes(64, 64)
    assert error(h.data_url(data[: len(data) // 2])).code == "invalid_image"


def test_byte_limit_is_checked_before_decoding(h):
    small = ImageLimits(max_bytes=1000, max_pixels=10**8, max_images=4)
    noisy = encode(Image.frombytes("RGB", (64, 64), os.urandom(64 * 64 * 3)))
    assert len(noisy) > 1000
    err = error(h.data_url(noisy), small)
    assert err.code == "image_too_large" and "1000 bytes" in err.message


def _bomb_png(width, height) -> bytes:
    """A valid PNG header claiming width x height pixels with a tiny body (a decompression bomb)."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b"")


def test_pixel_limit_is_checked_from_the_header(h):
    err = error(h.data_url(_bomb_png(100_000, 100_000)))
    assert err.code in ("image_too_large", "invalid_image")
    err = error(h.data_url(h.png_bytes(600, 600)))  # a real image over 512*512
    assert err.code == "image_too_large" and "600x600" in err.message


def test_open_image_is_pure(h):
    out = open_image(h.png_bytes(), LIMITS, "p")
    assert out.image.size == (64, 64)
    assert decode_data_url(h.data_url(b"abc"), LIMITS, "p") == b"abc"
    assert base64.b64decode(h.data_url(b"abc").split(",")[1]) == b"abc"


@pytest.fixture(scope="module")
def http_images():
    """A local HTTP server: /ok.png, /big (declared too big), /stream-big (no length), /slow, /missing."""
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    png = encode(Image.new("RGB", (32, 32), "blue"))

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, *args):
            pass

        def do_GET(self):
            if self.path == "/ok.png":
                body = png
            elif self.path == "/big":
                body = b"x" * 300_000
            elif self.path == "/stream-big":
                self.send_response(200)
                self.end_headers()
                for _ in range(40):
                    self.wfile.write(b"y" * 10_000)
                return
            elif self.path == "/slow":
                time.sleep(2)
                body = png
            else:
                self.send_response(404)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    class Quiet(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request, client_address):
            pass  # the client hangs up on purpose (too big, too slow)

    server = Quiet(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_remote_images_only_when_allowed_and_within_limits(http_images):
    # the test server is on loopback, which remote fetches refuse unless the operator allows it
    remote = ImageLimits(max_bytes=200_000, max_pixels=512 * 512, max_images=4, allow_remote=True, remote_timeout_s=0.5,
                         remote_allow_networks=("127.0.0.0/8",))
    assert load(f"{http_images}/ok.png", remote).image.size == (32, 32)
    assert error(f"{http_images}/ok.png").code == "remote_images_disabled"
    assert error(f"{http_images}/big", remote).code == "image_too_large"
    assert error(f"{http_images}/stream-big", remote).code == "image_too_large"
    assert error(f"{http_images}/slow", remote).code == "image_fetch_timeout"
    assert error(f"{http_images}/missing", remote).code == "image_fetch_failed"
    assert error("http://127.0.0.1:1/nothing-listens", remote).code == "image_fetch_failed"
