"""Content-addressed image files: `<root>/<sha[:2]>/<sha>`, written once, atomically and durably.

The bytes are fsynced before the interaction row that references them commits, so a row never
points at a missing file after a crash. Identical images are stored once.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import tempfile
from pathlib import Path

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_MAGIC = ((b"\x89PNG", "image/png"), (b"\xff\xd8", "image/jpeg"), (b"GIF8", "image/gif"), (b"BM", "image/bmp"))


def is_sha256(value: str) -> bool:
    return bool(_SHA256.match(value))


def media_type(data: bytes) -> str:
    """The image media type of stored bytes, from their first bytes ("application/octet-stream" if unknown)."""
    media = next((m for magic, m in _MAGIC if data.startswith(magic)), None)
    if media is None:
        media = "image/webp" if data[:4] == b"RIFF" and data[8:12] == b"WEBP" else "application/octet-stream"
    return media


class BlobStore:
    """Images by sha256 under one folder."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        if not is_sha256(sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256[:80]!r}")
        return self.root / sha256[:2] / sha256

    def put(self, data: bytes) -> str:
        """Store `data` (if new) and return its sha256."""
        sha = hashlib.sha256(data).hexdigest()
        target = self.path(sha)
        if target.exists():
            return sha
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(target.parent)
        return sha

    def get(self, sha256: str) -> bytes | None:
        try:
            return self.path(sha256).read_bytes()
        except (FileNotFoundError, ValueError):
            return None

    def data_url(self, sha256: str) -> str | None:
        """The stored image as a `data:` URL again (None if it is not here)."""
        data = self.get(sha256)
        if data is None:
            return None
        media = media_type(data)
        return f"data:{media if media.startswith('image/') else ''};base64,{base64.b64encode(data).decode()}"


def _fsync_dir(path: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
