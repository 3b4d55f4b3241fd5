"""The GPU check's parts that run anywhere: argument checks, refusals, the RL command, the table.

The check itself needs a CUDA device (scripts/gpu-check.sh, bench/gpu_check.py); on this CPU
the tests hold it to refusing early and clearly, and to a table and command that are right.
"""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from argparse import ArgumentParser
from pathlib import Path

import pytest
import torch

from openvlthinker.models import DEFAULT_MODEL

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "gpu-check.sh"
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "bench" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("argv, message", [
    ([], "--model"),
    (["--model", "m", "--gpu-memory-utilization", "1.5"], "between 0 and 1"),
    (["--model", "m", "--gpu-memory-utilization", "0"], "between 0 and 1"),
    (["--model", "m", "--clients", "1,x"], "comma-separated integers"),
    (["--model", "m", "--clients", "0,16"], "must be >= 1"),
    (["--model", "m", "--requests", "0"], "--requests must be >= 1"),
])
def test_bad_arguments_are_refused_with_the_reason(gpu_check, capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        gpu_check.parse_args(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_defaults_leave_the_trainer_room(gpu_check):
    args = gpu_check.parse_args(["--model", "m"])
    assert args.clients == [1, 16] and 0 < args.gpu_memory_utilization <= 0.5


def test_a_model_folder_without_config_is_refused(gpu_check, tmp_path):
    with pytest.raises(gpu_check.CheckError, match="not a local model folder"):
        gpu_check.check_model(str(tmp_path))
    assert gpu_check.check_model(DEFAULT_MODEL) == Path(DEFAULT_MODEL).resolve()


@NO_CUDA
def test_without_cuda_the_check_stops_before_starting_anything(gpu_check, capsys, tmp_path):
    assert gpu_check.main(["--model", DEFAULT_MODEL, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gpu-check: no CUDA device: torch ") and "run it on a CUDA machine" in err
    assert not (tmp_path / "out" / "gateway.log").exists()  # no server was started


def test_the_rl_command_is_one_bf16_cuda_round_that_the_rl_cli_accepts(gpu_check, tmp_path):
    from online_rl.cli import add_arguments

    cmd = gpu_check.rl_command("http://127.0.0.1:9", tmp_path, 4, 2, ["--lr=1e-5"])
    assert cmd[:4] == [sys.executable, "-m", "openvlthinker.cli", "rl"]
    parser = ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(cmd[4:])
    assert (args.device, args.dtype, args.grad_checkpointing, args.rounds) == ("cuda", "bfloat16", True, 1)
    assert (args.endpoint, args.group_size, args.prompts_per_round, args.lr) == ("http://127.0.0.1:9/v1", 4, 2, 1e-5)


def test_memory_peaks_split_the_trainer_from_vllm(gpu_check):
    sampler = gpu_check.MemorySampler(sample=lambda: {})
    sampler.record({101: 30_000.0, 102: 500.0})  # before the trainer starts: all of it is vLLM's
    sampler.trainer_pid = 200
    sampler.record({101: 30_100.0, 102: 500.0, 200: 9_000.0})
    sampler.record({101: 30_000.0, 200: 7_000.0})
    assert sampler.peak == {"vllm": 30_600.0, "trainer": 9_000.0}


def test_a_failing_nvidia_smi_costs_samples_not_the_check(gpu_check, capsys):
    calls = []

    def flaky() -> dict[int, float]:
        calls.append(1)
        if len(calls) == 1:
            raise subprocess.CalledProcessError(9, ["nvidia-smi"])
        return {7: 1_000.0}

    with gpu_check.MemorySampler(interval=0.01, sample=flaky) as sampler:
        deadline = time.monotonic() + 10
        while len(calls) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert sampler.peak["vllm"] == 1_000.0 and "nvidia-smi failed" in capsys.readouterr().err


def test_the_round_metrics_come_from_the_last_line(gpu_check, tmp_path):
    with pytest.raises(gpu_check.CheckError, match="wrote no"):
        gpu_check.read_round(tmp_path)
    rows = [{"round": 0, "step_s": 9.0}, {"round": 1, "step_s": 0.25, "peak_mem_mb": 8123.4, "wall_s": 41.0}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert gpu_check.read_round(tmp_path)["step_s"] == 0.25


def test_the_table_has_throughput_step_time_and_both_peaks(gpu_check):
    engine = [{"clients": 1, "requests": 32, "tokens": 4096, "tok_s": 812.34, "req_s": 6.35},
              {"clients": 16, "requests": 32, "tokens": 4000, "tok_s": 5123.0, "req_s": 41.0}]
    table = gpu_check.format_table("NVIDIA H100", "/models/m", engine,
                                   {"step_s": 0.4567, "peak_mem_mb": 8123.4, "wall_s": 41.04},
                                   {"vllm": 36_500.0, "trainer": 9_216.0})
    lines = table.splitlines()
    assert len({len(line) - len(line.rstrip("|").split("|")[-1]) for line in lines[2:]}) == 1  # one column
    for expected in ("vLLM throughput, 1 client ", "812.3 tok/s (6.35 req/s, 4096 tokens)",
                     "vLLM throughput, 16 clients", "5123.0 tok/s", "| 457 ms |", "41.0 s",
                     "8,123 MiB", "9,216 MiB", "36,500 MiB", "NVIDIA H100"):
        assert expected in table, (expected, table)
    missing = gpu_check.format_table("d", "m", engine[:1], {}, {"vllm": 0.0, "trainer": 0.0})
    assert missing.count("n/a") == 5


@pytest.mark.slow
def test_the_throughput_requests_are_image_questions_the_gateway_answers(gpu_check, tmp_path):
    from openai import OpenAI

    from serve.launcher import ServerProcess

    requests = gpu_check.image_requests(7)
    assert len(requests) == 7 and len({r["metadata"]["task_type"] for r in requests}) == 6
    # The shipped tiny model on the transformers engine: the same API the check drives on vLLM.
    server = ServerProcess(["--api-key", "k", "--run-dir", str(tmp_path / "run"), "--log-level", "warning"],
                           log_path=tmp_path / "gateway.log", env={"OMP_NUM_THREADS": "1"})
    try:
        client = OpenAI(base_url=f"{server.url}/v1", api_key="k", max_retries=0, timeout=120)
        row = gpu_check.throughput(client, requests[:4], 2, 12)
    finally:
        server.stop()
    assert (row["clients"], row["requests"]) == (2, 4) and 4 <= row["tokens"] <= 4 * 12
    assert row["tok_s"] > 0 and row["req_s"] > 0


def run_script(cwd=REPO, **env) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("MODEL", "WHEELS", "GPU_UTIL")}
    return subprocess.run(["bash", str(SCRIPT)], env={**base, **env}, cwd=cwd, capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("env, message", [
    ({}, "set MODEL to a local model folder"),
    ({"MODEL": "/no/such/model"}, "MODEL=/no/such/model is not a local model folder"),
    ({"MODEL": DEFAULT_MODEL, "WHEELS": "/no/wheels"}, "WHEELS=/no/wheels is not a folder"),
    ({"MODEL": DEFAULT_MODEL, "GPU_UTIL": "1.2"}, "GPU_UTIL=1.2 must be between 0 and 1"),
])
def test_the_script_checks_its_inputs_first(env, message):
    r = run_script(**env)
    assert r.returncode == 2 and message in r.stderr, r.stderr


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="checks the refusal without the NVIDIA driver")
def test_the_script_refuses_a_machine_without_a_gpu():
    model = Path(DEFAULT_MODEL)
    r = run_script(cwd=model.parent, MODEL=model.name)  # a MODEL relative to where it is run passes its check
    assert r.returncode == 2 and "nvidia-smi not found: this check needs a CUDA machine" in r.stderr, r.stderr
