"""`openvlthinker serve` options: precedence defaults < YAML < flags, validation, the vLLM engine's command line."""

import argparse
import importlib.util

import pytest

from openvlthinker.cli import build_parser
from serve.cli import build_config, make_engine
from serve.config import ServeConfig


def parse(*argv):
    return build_parser().parse_args(["serve", *argv])


def test_defaults_yaml_then_flags(tmp_path):
    cfg = build_config(parse())
    assert cfg.engine == "transformers" and cfg.served_name == "openvlthinker" and cfg.threads == 1
    assert cfg.model.endswith("weights/shapeworld-tiny") and cfg.store_url.endswith("runs/serve/serve.db")
    assert cfg.adapters_path.as_posix() == "runs/serve/adapters"
    yaml_file = tmp_path / "serve.yaml"
    yaml_file.write_text("max-queue: 3\nport: 9000\nallow_remote_images: true\n")
    cfg = build_config(parse("--config", str(yaml_file), "--port", "9100", "--max-image-pixels", "1000"))
    assert (cfg.max_queue, cfg.port, cfg.max_image_pixels, cfg.allow_remote_images) == (3, 9100, 1000, True)


def test_invalid_options_are_clear(tmp_path):
    with pytest.raises(ValueError, match="max_batch"):
        build_config(parse("--max-batch", "0"))
    with pytest.raises(ValueError, match="must differ"):
        build_config(parse("--api-key", "k", "--admin-key", "k"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("colour: blue\n")
    with pytest.raises(ValueError, match="unknown serve option"):
        build_config(parse("--config", str(bad)))
    with pytest.raises(SystemExit):
        parse("--engine", "tgi")
    with pytest.raises(ValueError, match="served_name"):
        ServeConfig(served_name="a@b")
    with pytest.raises(SystemExit):
        parse("--http", "zttp")
    with pytest.raises(ValueError, match="unknown loop 'trio'"):
        ServeConfig(loop="trio")  # the YAML file's way in, which argparse's choices do not guard


@pytest.mark.parametrize("text, message", [
    ("max_batch: many\n", "max_batch must be an integer, got 'many'"),
    ("port: abc\n", "port must be an integer"),
    ("remote_timeout_s: soon\n", "remote_timeout_s must be a number"),
    ("engine_process: 1\n", "engine_process must be true or false"),
    ("port: [8000\n", "is not valid YAML: .*line 2"),
])
def test_a_config_file_of_the_wrong_types_or_not_yaml_names_the_problem(tmp_path, text, message):
    """Found by scripts/bad-inputs.py: these were a TypeError or a YAML traceback, not a message."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(ValueError, match=message):
        build_config(parse("--config", str(bad)))


def test_http_stack_flags_reach_the_config():
    assert (build_config(parse()).http, build_config(parse()).loop) == ("auto", "auto")
    cfg = build_config(parse("--http", "h11", "--loop", "asyncio"))
    assert (cfg.http, cfg.loop) == ("h11", "asyncio")
    # The C implementations are optional: asking for one that is not installed says how to get it.
    for name, package in (("http", "httptools"), ("loop", "uvloop")):
        if importlib.util.find_spec(package) is None:
            with pytest.raises(ValueError, match=f"pip install {package}"):
                ServeConfig(**{name: package})
        else:
            assert getattr(ServeConfig(**{name: package}), name) == package


def test_vllm_engine_command_line(tmp_path):
    import sys

    cfg = build_config(parse("--engine", "vllm", "--vllm-python", sys.executable, "--max-lora-rank", "16",
                             "--gpu-memory-utilization", "0.45", "--max-model-len", "8192", "--max-loras", "3",
                             "--vllm-arg=--enforce-eager", "--vllm-arg", "--dtype bfloat16", "--run-dir", str(tmp_path)))
    engine = make_engine(cfg)  # builds the command line; vLLM starts only with the gateway
    cmd = engine.launch.command()
    assert cmd[:3] == [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
    flags = dict(zip(cmd, cmd[1:]))
    assert flags["--max-lora-rank"] == "16" and flags["--gpu-memory-utilization"] == "0.45"
    assert flags["--max-model-len"] == "8192" and flags["--max-loras"] == "3" and flags["--served-model-name"] == "base"
    assert "--enable-lora" in cmd and flags["--host"] == "127.0.0.1"
    assert '"image": 8' in flags["--limit-mm-per-prompt"]  # the shipped model is a VL model
    assert cmd[-3:] == ["--enforce-eager", "--dtype", "bfloat16"]  # passed through last: they win
    assert engine.launch.environment()["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"


def test_vllm_options_are_checked(tmp_path):
    with pytest.raises(ValueError, match="gpu_memory_utilization"):
        build_config(parse("--engine", "vllm", "--gpu-memory-utilization", "1.5"))
    with pytest.raises(ValueError, match="vllm-python"):
        make_engine(build_config(parse("--engine", "vllm", "--vllm-python", str(tmp_path / "no-python"))))


def test_missing_model_folder_fails_before_serving(tmp_path, capsys):
    from openvlthinker.cli import main

    assert main(["serve", "--model", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert isinstance(parse(), argparse.Namespace)
