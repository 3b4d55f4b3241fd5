"""Key files, the loopback test behind "no key, no public bind", and whose feedback trains.

Kept free of FastAPI so `openvlthinker up` and the config can use it without the server stack.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import secrets
from pathlib import Path
from typing import Sequence

KEY_HASH_CHARS = 16  # 64 bits of sha256: tells keys apart in the store, never the key itself


def is_loopback_host(host: str) -> bool:
    """True for an address only this machine can reach (127.0.0.0/8, ::1, 'localhost').

    Any other name counts as reachable from outside: what it resolves to is the resolver's to say
    and may change, so a hostname bind needs a key like 0.0.0.0 does."""
    host = host.strip().strip("[]").lower()
    if host in ("localhost", "localhost."):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def key_hash(token: str | None) -> str | None:
    """The sha256 hex prefix stored with feedback in place of the key that sent it (None without a key)."""
    return hashlib.sha256(token.encode()).hexdigest()[:KEY_HASH_CHARS] if token else None


def matches_any(token: str | None, keys: Sequence[str]) -> bool:
    """`token` equals one of `keys`, each compared in constant time."""
    if token is None:
        return False
    found = False
    for key in keys:  # no early exit: the time taken does not say which key matched
        found |= hmac.compare_digest(token.encode(), key.encode())
    return found


def feedback_trusted(token: str | None, trusted_keys: Sequence[str], host: str) -> bool:
    """Whether feedback sent with `token` may train: with keys listed, only from those; with none, from
    everyone when the gateway binds loopback (one machine's users), from nobody when it is reachable."""
    if trusted_keys:
        return matches_any(token, trusted_keys)
    return is_loopback_host(host)


def save_key(path: Path, key: str) -> None:
    """Write `key` to `path`, readable by its owner only (0600), even when the file already existed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT; tighten it
        os.write(fd, key.encode())
    finally:
        os.close(fd)


def load_or_create_key(path: Path) -> tuple[str, bool]:
    """(key, created): the key in `path`, or a new random one saved there with mode 0600."""
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(24)
        try:
            # O_EXCL: two processes starting together cannot both write a different key
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            try:
                os.write(fd, key.encode())
            finally:
                os.close(fd)
            return key, True
    if path.is_dir():
        raise ValueError(f"key file {path} is a directory; name a file (it is created if missing)")
    try:
        key = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read the key file {path}: {exc}") from None
    if not key or any(c.isspace() for c in key):
        raise ValueError(f"key file {path} must hold one key without spaces; delete it to have a new key "
                         "generated")
    return key, False
