"""Content-addressed image files: `<root>/<sha[:2]>/<sha>`, written once, atomically and durably.

The bytes are fsynced before the interaction row that references them commits, so a row never
points at a missing file after a crash. Identical images are stored once. `BlobStore` keeps them
in a folder (a shared folder serves several gateway replicas as is); `FsspecBlobStore` keeps the
same layout under an fsspec URL (`s3://bucket/images`, `file:///srv/images`, `memory://` in tests).
`open_blobs` picks one from what `--images-dir` / `--images-url` gave.
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


def open_blobs(where: "str | os.PathLike") -> "BlobStore | FsspecBlobStore":
    """The blob store at `where`: an fsspec URL (`scheme://...`) or a folder."""
    if isinstance(where, str) and "://" in where:
        return FsspecBlobStore(where)
    return BlobStore(where)


class _DataUrl:
    def data_url(self, sha256: str) -> str | None:
        """The stored image as a `data:` URL again (None if it is not here)."""
        data = self.get(sha256)
        if data is None:
            return None
        media = media_type(data)
        return f"data:{media if media.startswith('image/') else ''};base64,{base64.b64encode(data).decode()}"


class BlobStore(_DataUrl):
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


class FsspecBlobStore(_DataUrl):
    """Images by sha256 under an fsspec URL: the same layout and write-once rule as `BlobStore`.

    A local filesystem gets a temporary file renamed into place (atomic); an object store gets one
    PUT, which makes the object visible only once it is complete, so no reader sees half an image.
    """

    def __init__(self, url: str):
        from fsspec.core import url_to_fs

        try:
            self.fs, path = url_to_fs(url)
        except (ImportError, ValueError) as exc:  # "Protocol not known", "Install s3fs to access S3"
            raise ValueError(f"images URL {url!r}: {exc}") from None
        self.root, self._base = url, path.rstrip("/")
        self._local = "file" in _protocols(self.fs)
        self.fs.makedirs(self._base, exist_ok=True)

    def path(self, sha256: str) -> str:
        if not is_sha256(sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256[:80]!r}")
        return f"{self._base}/{sha256[:2]}/{sha256}"

    def put(self, data: bytes) -> str:
        """Store `data` (if new) and return its sha256."""
        sha = hashlib.sha256(data).hexdigest()
        target = self.path(sha)
        if self.fs.exists(target):
            return sha
        if not self._local:
            self.fs.pipe_file(target, data)
            return sha
        parent = target.rsplit("/", 1)[0]
        self.fs.makedirs(parent, exist_ok=True)
        tmp = f"{parent}/.tmp-{os.urandom(8).hex()}"
        try:
            with self.fs.open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            self.fs.mv(tmp, target)
        except BaseException:
            if self.fs.exists(tmp):
                self.fs.rm_file(tmp)
            raise
        _fsync_dir(Path(parent))
        return sha

    def get(self, sha256: str) -> bytes | None:
        try:
            return self.fs.cat_file(self.path(sha256))
        except (FileNotFoundError, ValueError):
            return None


def _protocols(fs) -> tuple[str, ...]:
    return (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)


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
