"""Load task records from OneThinker/EasyR1 JSON or JSONL files and open their images.

Image paths in a file are relative to an image root (by default the file's folder).
Every error names the file, the record (index and problem_id) and the field at fault.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable

from .records import RecordError, TaskRecord

# Decompression-bomb guard for files we open ourselves; serve has its own request limits.
MAX_IMAGE_PIXELS = 64_000_000


def _read_objects(path: Path) -> Iterable[tuple[str, Any]]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        for line_no, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    yield f"{path}:{line_no}", json.loads(line)
                except json.JSONDecodeError as exc:
                    raise RecordError(f"{path}:{line_no}: invalid JSON: {exc.msg}") from None
        return
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RecordError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    if not isinstance(data, list):
        raise RecordError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    for i, obj in enumerate(data):
        yield f"{path}[{i}]", obj


def load_records(
    path: str | Path, image_root: str | Path | None = None, *, check_images: bool = True
) -> list[TaskRecord]:
    """Read records from a .json list or .jsonl file; image paths become absolute under image_root."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such data file: {path}")
    root = Path(image_root) if image_root is not None else path.parent
    records = []
    for where, obj in _read_objects(path):
        record = TaskRecord.from_dict(obj, where=where)
        images = tuple(str((root / p).resolve()) for p in record.images)
        if check_images:
            for original, resolved in zip(record.images, images):
                if not Path(resolved).is_file():
                    raise RecordError(
                        f"{where} (problem_id={record.problem_id!r}): field 'images': "
                        f"file {original!r} not found under image root {root}"
                    )
        records.append(replace(record, images=images))
    return records


def open_image(path: str | Path):
    """Open an image file as RGB PIL, with a clear error for missing or unreadable files."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise ValueError(f"cannot read image {path}: {exc}") from None


def png_data_url(image) -> str:
    """A PIL image as a lossless PNG `data:` URL, the form OpenAI `image_url` parts carry."""
    import base64
    import io

    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
