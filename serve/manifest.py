"""Adapter version manifests: `manifest.json` beside the PEFT files of a `policy-vNNNN/` folder.

Format (written by `openvlthinker.versions.publish`, e.g. from the online RL loop):
  {"version": "v0003", "parent": "v0002",
   "sha256": {"adapter_model.safetensors": "<hex>", "adapter_config.json": "<hex>"},
   "metrics": {...}}
On load every listed file is hashed and compared, so a modified or half-written version is
refused. A folder without a manifest still loads (hand-made adapters); `files` is accepted as
another name for `sha256`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from openvlthinker.versions import ADAPTER_FILES, sha256_file

from .errors import invalid

__all__ = ["ADAPTER_FILES", "peek_manifest", "read_manifest", "sha256_file"]


def read_manifest(folder: Path) -> dict[str, Any]:
    """The folder's manifest.json, checked against the files' sha256 (400 on any mismatch)."""
    path = folder / "manifest.json"
    if not path.is_file():
        return {}
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise invalid(f"manifest.json of {folder.name} is not valid JSON: {exc}", "version", "invalid_manifest") from None
    if not isinstance(manifest, dict):
        raise invalid(f"manifest.json of {folder.name} is not a JSON object", "version", "invalid_manifest")
    hashes = manifest.get("sha256") or manifest.get("files") or {}
    for name, expected in (hashes.items() if isinstance(hashes, dict) else []):
        target = (folder / name).resolve()
        if not target.is_relative_to(folder.resolve()) or not target.is_file():
            raise invalid(f"manifest of {folder.name} lists {name!r}, which is not in the folder", "version",
                          "adapter_checksum_mismatch")
        if sha256_file(target) != str(expected).lower():
            raise invalid(f"sha256 of {folder.name}/{name} does not match its manifest; refusing to load a "
                          "modified or partially written adapter", "version", "adapter_checksum_mismatch")
    return manifest


def peek_manifest(folder: Path) -> dict[str, Any]:
    """The manifest without verification (for listings); {} when absent or unreadable."""
    try:
        data = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}
