"""What an adapters folder holds: version names, the folder of a version or relative path, the versions on disk.

A version `vNNNN` lives in `policy-vNNNN/` (any other folder name is its own version name); a path from a
client must stay strictly inside the adapters folder, symlinks included.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath, PureWindowsPath

from openvlthinker.versions import FOLDER_PREFIX

from .errors import invalid, not_found
from .manifest import ADAPTER_FILES

_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,63}$")


def check_version(name: str, param: str) -> str:
    """`name` if it is a valid version name, else a 400 naming `param`."""
    if not _VERSION.match(name):
        raise invalid(f"Invalid version name {name[:80]!r} (letters, digits, '.', '_', '-').", param, "invalid_version")
    return name


def resolve_folder(root: Path, version: str | None = None, path: str | None = None) -> tuple[str, Path]:
    """Map a version or a relative path to (version, folder) strictly inside `root`, a PEFT adapter folder."""
    root = root.resolve()
    if version is not None:
        check_version(version, "version")
        rel, param = f"{FOLDER_PREFIX}{version}", "version"
    else:
        rel, param = str(path), "path"
        if (not rel or PurePosixPath(rel).is_absolute() or PureWindowsPath(rel).is_absolute()
                or rel.startswith(("~", "\\")) or ".." in re.split(r"[\\/]", rel) or "\x00" in rel):
            raise invalid("Adapter paths must be relative to the adapters folder, without '..'.", param,
                          "invalid_adapter_path")
    folder = (root / rel).resolve()
    if folder == root or not folder.is_relative_to(root):  # also catches symlinks pointing outside
        raise invalid("Adapter path resolves outside the adapters folder.", param, "invalid_adapter_path")
    if not folder.is_dir():
        raise not_found(f"No adapter folder {rel!r} in the adapters folder.", param, "adapter_not_found")
    missing = [f for f in ADAPTER_FILES if not (folder / f).is_file()]
    if missing:
        raise invalid(f"{rel} is not a PEFT adapter folder (missing {', '.join(missing)}).", param, "invalid_adapter")
    return check_version(_version_of(folder), param), folder


def versions_on_disk(root: Path) -> dict[str, Path]:
    """Every adapter folder directly in `root` with a valid version name, by version."""
    found: dict[str, Path] = {}
    if root.is_dir():
        for folder in sorted(root.iterdir()):
            if folder.is_dir() and all((folder / f).is_file() for f in ADAPTER_FILES):
                name = _version_of(folder)
                if _VERSION.match(name):
                    found[name] = folder
    return found


def relative_path(folder: Path, root: Path) -> str:
    """`folder` relative to `root` for display; its own name when it lies elsewhere."""
    try:
        return str(folder.resolve().relative_to(root.resolve()))
    except ValueError:
        return folder.name


def _version_of(folder: Path) -> str:
    return folder.name[len(FOLDER_PREFIX):] if folder.name.startswith(FOLDER_PREFIX) else folder.name
