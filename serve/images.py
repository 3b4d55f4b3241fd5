"""Turn an `image_url` into a checked PIL image: data URLs always, http(s) only when allowed.

Limits are enforced before the expensive step: the encoded size before decoding base64 fully
matters, the pixel count is read from the header before the pixels are decoded (a small PNG
can expand to gigabytes), remote fetches stream with a byte cap and a total timeout and go only
to public addresses unless the operator allows a network (`remote_images`). Every
failure is a 400 naming the offending part (`param`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import re
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from .errors import APIError, invalid

FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")
_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+\-]+/[\w.+\-]+)?(?P<params>(;[\w\-]+=[^;,]*)*)(?P<b64>;base64)?,", re.I)


@dataclass(frozen=True)
class ImageLimits:
    """What one request's images may be; remote URLs only with `allow_remote`, from public addresses
    unless in `remote_allow_networks` (CIDR strings, parsed here once)."""

    max_bytes: int
    max_pixels: int
    max_images: int
    allow_remote: bool = False
    remote_timeout_s: float = 10.0
    remote_allow_networks: tuple = ()

    def __post_init__(self) -> None:
        from .remote_images import parse_networks

        object.__setattr__(self, "remote_allow_networks", parse_networks(self.remote_allow_networks))


@dataclass(frozen=True)
class DecodedImage:
    """A checked image: RGB pixels for the engine, the original bytes and their sha256 for the store."""

    image: Image.Image
    data: bytes
    sha256: str
    format: str


def decode_data_url(url: str, limits: ImageLimits, param: str) -> bytes:
    """Bytes of a base64 `data:` URL; 400 on a malformed URL, bad base64 or too many bytes."""
    match = _DATA_URL.match(url)
    if not match:
        raise invalid("Malformed data URL: expected data:image/<type>;base64,<data>.", param, "invalid_image_url")
    if not match.group("b64"):
        raise invalid("Only base64 data URLs are supported (data:image/<type>;base64,...).", param,
                      "invalid_image_url")
    mime = (match.group("mime") or "").lower()
    if mime and not mime.startswith("image/"):
        raise invalid(f"Data URL has media type {mime!r}; expected an image.", param, "invalid_image")
    payload = url[match.end():].strip()
    # base64 grows 4/3: reject before decoding a huge payload.
    if len(payload) * 3 // 4 > limits.max_bytes + 3:
        raise _too_big(limits, param)
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise invalid("Image data is not valid base64.", param, "invalid_base64") from None
    if len(data) > limits.max_bytes:
        raise _too_big(limits, param)
    if not data:
        raise invalid("Image data is empty.", param, "invalid_image")
    return data


async def fetch_remote(url: str, limits: ImageLimits, param: str) -> bytes:
    """Download an http(s) image (only with --allow-remote-images) from a public address, with a byte cap,
    a total timeout and every redirect checked (see `remote_images`)."""
    from .remote_images import fetch

    if not limits.allow_remote:
        raise invalid("Remote image URLs are disabled on this server; send the image as a base64 data URL "
                      "(start the server with --allow-remote-images to allow http(s) URLs).", param,
                      "remote_images_disabled")
    return await fetch(url, max_bytes=limits.max_bytes, timeout_s=limits.remote_timeout_s,
                       allow_networks=limits.remote_allow_networks, param=param)


def open_image(data: bytes, limits: ImageLimits, param: str) -> DecodedImage:
    """Decode bytes into an RGB image after checking the pixel count from the header."""
    if len(data) > limits.max_bytes:
        raise _too_big(limits, param)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=FORMATS)
            width, height = img.size
            if width * height > limits.max_pixels:
                raise invalid(f"Image is {width}x{height} = {width * height} pixels; the limit is "
                              f"{limits.max_pixels}.", param, "image_too_large")
            if width < 1 or height < 1:
                raise invalid("Image has no pixels.", param, "invalid_image")
            fmt = img.format or "unknown"
            img.load()
            rgb = img.convert("RGB")
    except APIError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise invalid(f"The bytes are not an image in a supported format ({', '.join(FORMATS)}) or exceed "
                      "the decoder's limits.", param, "invalid_image") from None
    except (OSError, ValueError, SyntaxError) as exc:  # truncated or corrupt files
        raise invalid(f"The image could not be decoded: {exc}", param, "invalid_image") from None
    return DecodedImage(rgb, data, hashlib.sha256(data).hexdigest(), fmt)


async def load_image_url(url: str, limits: ImageLimits, param: str) -> DecodedImage:
    """Bytes for a data or http(s) URL, then `open_image` in a worker thread (decoding is CPU work)."""
    from starlette.concurrency import run_in_threadpool

    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "data":
        return await run_in_threadpool(lambda: open_image(decode_data_url(url, limits, param), limits, param))
    if scheme in ("http", "https"):
        data = await fetch_remote(url, limits, param)
    else:
        raise invalid("Unsupported image URL; use a base64 data URL (or http(s) with --allow-remote-images).",
                      param, "invalid_image_url")
    return await run_in_threadpool(open_image, data, limits, param)


def _too_big(limits: ImageLimits, param: str) -> APIError:
    return invalid(f"Image is larger than the limit of {limits.max_bytes} bytes.", param, "image_too_large")
