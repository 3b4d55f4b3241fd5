"""ServeConfig: every knob of the gateway, documented once, checked in `__post_init__`.

Precedence is defaults (here) < YAML file (`--config`) < command-line flags; `serve.cli` only
passes the values a user set, so no default is written twice.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from .keys import is_loopback_host

ENGINES = ("transformers", "vllm")
# uvicorn's HTTP parser and event loop. "auto" takes the C ones (httptools, uvloop) when they are
# installed and the pure-Python h11 and asyncio otherwise. The project does not install the C ones:
# on the 2-core benchmark they did not lower the gateway's CPU (`bench/serve.py --compare http`).
HTTP_IMPLS = ("auto", "httptools", "h11")
LOOPS = ("auto", "uvloop", "asyncio")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]*$")
_NUMBER_TYPES = {"int": (int,), "float": (int, float), "bool": (bool,)}  # annotation -> accepted value types
_TYPE_WORDS = {"int": "an integer", "float": "a number", "bool": "true or false"}


def _key_list(value: Any) -> list[str]:
    """Keys from a list and/or comma-separated strings (flags, YAML), blanks dropped, order kept."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(v, str) for v in items):
        raise ValueError("trusted_feedback_keys must be a list of strings (or one comma-separated string)")
    keys = [key.strip() for item in items for key in item.split(",") if key.strip()]
    if any(any(c.isspace() for c in key) for key in keys):
        raise ValueError("trusted_feedback_keys: a key cannot contain spaces")
    return list(dict.fromkeys(keys))


def _default_model() -> str:
    from openvlthinker.models import DEFAULT_MODEL

    return DEFAULT_MODEL


@dataclass
class ServeConfig:
    """Configuration of one gateway process."""

    model: str = ""  # base model folder or hub id; "" = the shipped tiny model
    engine: str = "transformers"  # transformers | vllm
    device: str = "cpu"  # torch device for the transformers engine (cpu, cuda, auto)
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None  # when set, every /v1 route needs `Authorization: Bearer <api_key>`
    api_key_file: str | None = None  # the API key's file; created with a random key (mode 0600) when missing
    # Without a key a non-loopback bind is refused: anyone reaching the port could use the model and
    # write training feedback. This says the operator means it (another layer authenticates).
    insecure_no_auth: bool = False
    # Keys whose feedback trains the RL loop (also accepted as API keys). Empty: everyone's on a loopback
    # bind, nobody's otherwise; untrusted feedback is stored all the same, marked so the loop skips it.
    trusted_feedback_keys: list[str] = field(default_factory=list)
    admin_key: str | None = None  # adapter admin, interaction export, images; admin routes are off without it
    run_dir: str = "runs/serve"  # store, images and adapter state live here
    store: str | None = None  # SQLAlchemy URL; None = SQLite file <run_dir>/serve.db (WAL)
    adapters_dir: str | None = None  # folder of policy-vNNNN/ versions; None = <run_dir>/adapters
    # Stored images, content-addressed: a folder (None = <run_dir>/images; replicas share one by naming
    # the same folder), or instead an fsspec URL (s3://bucket/images with s3fs installed, file:///srv/images).
    images_dir: str | None = None
    images_url: str | None = None
    # Seconds between reads of the adapter alias in the store's database: a promote through one replica
    # is served by every replica within this plus the time to load the version.
    registry_poll_s: float = 1.0
    served_name: str = "openvlthinker"  # the alias clients use; `<served_name>@vNNNN` pins a version
    max_batch: int = 8  # sequences the engine decodes together
    max_queue: int = 64  # waiting requests before the engine answers 503
    max_n: int = 8  # largest `n` (choices) per request
    max_images: int = 8  # images per request
    max_image_bytes: int = 10 * 1024 * 1024  # encoded size of one image
    max_image_pixels: int = 16_000_000  # width*height of one image, checked before decoding
    allow_remote_images: bool = False  # fetch http(s) image URLs (off: data: URLs only)
    remote_timeout_s: float = 10.0  # total time allowed to fetch one remote image
    # Remote images come from public addresses only; these networks (CIDR) are fetched from anyway.
    remote_image_allow_networks: list[str] = field(default_factory=list)
    max_body_bytes: int = 0  # request body cap (413 above it); 0 = room for max_images base64 images + 1 MiB
    default_max_tokens: int = 1024  # completion cap when the request gives none (bounded by the context)
    threads: int = 1  # torch intra-op threads (tiny tensors gain nothing from more)
    engine_process: bool = True  # transformers engine: decode in a child process (False: a gateway thread)
    log_level: str = "info"
    http: str = "auto"  # uvicorn's HTTP parser: auto (httptools if importable), httptools, h11
    loop: str = "auto"  # uvicorn's event loop: auto (uvloop if importable), uvloop, asyncio
    # --- vLLM engine only (vLLM runs as a child process, usually from its own environment) ---
    vllm_python: str = ""  # interpreter of an environment with vLLM; "" = this one
    vllm_port: int = 0  # vLLM's private loopback port; 0 = any free port
    vllm_args: list[str] = field(default_factory=list)  # extra vLLM arguments, passed through last (override ours)
    vllm_start_timeout_s: float = 900.0  # model load + warm-up of a large model on a cold cache
    gpu_memory_utilization: float | None = None  # fraction of the GPU vLLM may take (CPU builds: of RAM); None = vLLM's 0.9
    tensor_parallel_size: int = 1  # GPUs one copy of the model is split over (vLLM's tensor parallelism)
    pipeline_parallel_size: int = 1  # stages the layers are split into (vLLM's pipeline parallelism)
    data_parallel_size: int = 1  # copies of the model behind this gateway's one vLLM server (vLLM's data parallelism)
    max_model_len: int | None = None  # context window; None = the model's own
    max_lora_rank: int = 64  # largest LoRA rank vLLM reserves room for
    max_loras: int = 4  # adapter versions resident on the GPU at once (promoted + canary + rollback + spare)

    def __post_init__(self) -> None:
        self._check_number_types()
        if self.engine not in ENGINES:
            raise ValueError(f"unknown engine {self.engine!r}; valid: {', '.join(ENGINES)}")
        for name, valid in (("http", HTTP_IMPLS), ("loop", LOOPS)):
            value = getattr(self, name)
            if value not in valid:
                raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(valid)}")
            if value in ("httptools", "uvloop") and importlib.util.find_spec(value) is None:
                raise ValueError(f"{name} {value!r} needs the {value} package: pip install {value}")
        if not self.model:
            self.model = _default_model()
        if not _NAME.match(self.served_name) or "@" in self.served_name:
            raise ValueError(f"served_name {self.served_name!r} must be letters, digits, '.', '_' or '-'")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port} is not in 0..65535")
        positive = ("max_batch", "max_queue", "max_n", "max_images", "max_image_bytes", "max_image_pixels",
                    "default_max_tokens", "threads")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_body_bytes <= 0:
            self.max_body_bytes = self.max_images * self.max_image_bytes * 4 // 3 + (1 << 20)
        self._check_vllm()
        if self.remote_timeout_s <= 0:
            raise ValueError("remote_timeout_s must be > 0")
        self._check_auth()
        self._check_remote_images()

    def _check_number_types(self) -> None:
        """A YAML file can give any type: a number or switch field must be one (`max_batch: many` is an error
        naming it, not a Python traceback)."""
        for f in fields(self):
            names = [name.strip() for name in str(f.type).split("|")]
            accepted = tuple(t for name in names for t in _NUMBER_TYPES.get(name, ()))
            value = getattr(self, f.name)
            if not accepted or (value is None and "None" in names):
                continue
            if not isinstance(value, accepted) or (isinstance(value, bool) and bool not in accepted):
                what = " or ".join(_TYPE_WORDS.get(n, n) for n in names if n != "None")
                raise ValueError(f"{f.name} must be {what}, got {value!r}")

    def _check_auth(self) -> None:
        for name in ("api_key", "admin_key", "api_key_file"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{name} must be a string, got {type(value).__name__}")
            if value == "":
                setattr(self, name, None)
        if not isinstance(self.insecure_no_auth, bool):
            raise ValueError(f"insecure_no_auth must be true or false, got {self.insecure_no_auth!r}")
        if self.api_key and self.api_key_file:
            raise ValueError("give api_key or api_key_file, not both")
        self.trusted_feedback_keys = _key_list(self.trusted_feedback_keys)
        self.check_keys()
        if not (self.api_key or self.api_key_file or self.insecure_no_auth or is_loopback_host(self.host)):
            raise ValueError(
                f"host {self.host!r} is not a loopback address and no API key is set: anyone who can reach the port "
                "could use the model and send feedback that trains it. Pass --api-key KEY, or --api-key-file PATH "
                "(a random key is generated and saved there if the file is missing), or --insecure-no-auth if "
                "something in front of the gateway authenticates clients.")

    def check_keys(self) -> None:
        """The admin key must differ from every client key (also after api_key_file was read)."""
        if self.admin_key and self.api_key == self.admin_key:
            raise ValueError("admin_key must differ from api_key (otherwise every client is an admin)")
        if self.admin_key and self.admin_key in self.trusted_feedback_keys:
            raise ValueError("admin_key must differ from the trusted_feedback_keys (they are client keys)")

    def _check_remote_images(self) -> None:
        from .remote_images import parse_networks

        if isinstance(self.remote_image_allow_networks, str):
            self.remote_image_allow_networks = [self.remote_image_allow_networks]
        networks = parse_networks(self.remote_image_allow_networks)
        if networks and not self.allow_remote_images:
            raise ValueError("remote_image_allow_networks needs allow_remote_images (--allow-remote-images)")
        self.remote_image_allow_networks = [str(net) for net in networks]

    def _check_vllm(self) -> None:
        if not 0 <= self.vllm_port <= 65535:
            raise ValueError(f"vllm_port {self.vllm_port} is not in 0..65535")
        if isinstance(self.vllm_args, str) or not all(isinstance(a, str) for a in self.vllm_args):
            raise ValueError("vllm_args must be a list of strings")
        if self.vllm_start_timeout_s <= 0:
            raise ValueError("vllm_start_timeout_s must be > 0")
        if self.gpu_memory_utilization is not None and not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}")
        if self.max_model_len is not None and self.max_model_len < 16:
            raise ValueError(f"max_model_len must be >= 16, got {self.max_model_len}")
        if not self.registry_poll_s > 0:
            raise ValueError(f"registry_poll_s must be > 0, got {self.registry_poll_s}")
        if self.images_url is not None:
            if self.images_dir is not None:
                raise ValueError("give images_dir (--images-dir) or images_url (--images-url), not both")
            if "://" not in self.images_url:
                raise ValueError(f"images_url must be an fsspec URL (scheme://path), got {self.images_url!r}; "
                                 "for a folder use images_dir (--images-dir)")
        for name in ("tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size", "max_lora_rank",
                     "max_loras"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def run_path(self) -> Path:
        return Path(self.run_dir)

    @property
    def store_url(self) -> str:
        return self.store or f"sqlite:///{(self.run_path / 'serve.db').resolve()}"

    @property
    def adapters_path(self) -> Path:
        return Path(self.adapters_dir) if self.adapters_dir else self.run_path / "adapters"

    @property
    def images_path(self) -> Path:
        return Path(self.images_dir) if self.images_dir else self.run_path / "images"

    @property
    def images_location(self) -> str | Path:
        """Where stored images go: the fsspec URL if one is given, else the folder."""
        return self.images_url or self.images_path

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "ServeConfig":
        """Build from a dict (YAML file + flags); unknown keys are an error naming the valid ones."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown serve option(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
        return cls(**dict(values))
