"""`openvlthinker up` (what `make run` starts): gateway + RL loop + demo, and Ctrl-C stops all three."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from serve.launcher import free_port, wait_for_url


def _text(path) -> str:
    return path.read_text() if path.is_file() else ""


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_up_serves_runs_the_loop_and_the_demo_and_stops_cleanly(tmp_path, stop):
    port, demo_port = free_port(), free_port()
    # As a background job of a non-interactive shell starts it: with SIGINT ignored, which Python keeps.
    proc = subprocess.Popen([sys.executable, "-m", "openvlthinker.cli", "up", "--port", str(port), "--run-dir",
                             str(tmp_path), "--rl-min-new", "2", "--demo-port", str(demo_port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    children = []
    try:
        deadline, health = time.monotonic() + 300, None
        while time.monotonic() < deadline:
            if proc.poll() is not None:  # `up` gave up (a port taken, a child that would not start): say why
                pytest.fail(f"`up` exited with {proc.returncode} before the gateway was up:\n{proc.stdout.read()[-3000:]}")
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
                if health.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail(f"gateway did not come up; last /health: {health.status_code if health else 'no answer'} "
                        f"{health.text[:500] if health else ''}; serve.log ends:\n{_text(tmp_path / 'serve.log')[-3000:]}")
        key = (tmp_path / "admin.key").read_text().strip()
        assert httpx.get(f"http://127.0.0.1:{port}/v1/adapters", headers={"Authorization": f"Bearer {key}"},
                         timeout=10).status_code == 200
        deadline = time.monotonic() + 300  # the loop loads the model, then waits for feedback (slow on a busy CPU)
        while "waiting for 2 new graded" not in _text(tmp_path / "rl.log") and time.monotonic() < deadline:
            time.sleep(0.5)  # rl.log appears only once `up` has seen the gateway ready and started the loop
        assert "waiting for 2 new graded" in _text(tmp_path / "rl.log")
        deadline = time.monotonic() + 120  # `up` prints the URLs only once the demo answers
        while time.monotonic() < deadline:
            try:
                page = httpx.get(f"http://127.0.0.1:{demo_port}/", timeout=5)
                break
            except httpx.TransportError:
                time.sleep(0.5)
        assert page.status_code == 200 and "OpenVLThinkerV2 demo" in page.text
        demo = [pid for pid in _children(proc.pid) if " demo " in _cmdline(pid)]
        assert len(demo) == 1
        os.kill(demo[0], signal.SIGKILL)  # a crash: `up` starts the demo again after 5 s
        assert wait_for_url(proc, f"http://127.0.0.1:{demo_port}/", 120, 0.5), \
            f"the demo did not come back; its log ends:\n{_text(tmp_path / 'demo.log')[-3000:]}"
        children = _children(proc.pid)
        assert len(children) == 3 and demo[0] not in children  # gateway, loop, the new demo
    finally:
        proc.send_signal(stop)  # to `up` alone: it must stop its children itself
        out = _wait_or_kill(proc, children)
    assert proc.returncode == 0, out
    assert not [pid for pid in children if _alive(pid)], "children outlived `up`"
    assert "OpenAI-compatible API" in out and f"demo:                   http://127.0.0.1:{demo_port}" in out
    assert "the demo exited with -9" in out and "restarting it in 5 s" in out, out
    for url in (f"http://127.0.0.1:{port}/health", f"http://127.0.0.1:{demo_port}/"):
        with pytest.raises(httpx.TransportError):
            httpx.get(url, timeout=2)


def test_interrupted_start_leaves_no_server_behind(tmp_path, monkeypatch):
    import serve.launcher as launcher

    def interrupted(self, timeout):
        raise KeyboardInterrupt  # Ctrl-C while waiting for /health

    monkeypatch.setattr(launcher.ServerProcess, "wait_ready", interrupted)
    children = []
    real_popen = subprocess.Popen

    def recording_popen(*args, **kwargs):
        children.append(real_popen(*args, **kwargs))
        return children[-1]

    monkeypatch.setattr(launcher.subprocess, "Popen", recording_popen)
    with pytest.raises(KeyboardInterrupt):
        launcher.ServerProcess(["--model", "unused"], log_path=tmp_path / "s.log")
    assert children and children[0].poll() is not None  # killed, not orphaned


def _children(pid: int) -> list[int]:
    """PIDs whose parent is `pid` (Linux /proc)."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited while we looked
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _wait_or_kill(proc: subprocess.Popen, children: list[int]) -> str:
    """`up`'s output once it exits; if it does not within 60 s, kill it and its children (a failing test must
    not leave servers behind) and fail."""
    try:
        return proc.communicate(timeout=60)[0]
    except subprocess.TimeoutExpired:
        for pid in [proc.pid, *children]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.communicate()
        pytest.fail("`up` did not stop within 60 s")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.5)


@pytest.mark.slow
def test_a_crashed_loop_is_restarted_and_a_second_signal_kills_the_children(tmp_path):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "openvlthinker.cli", "up", "--port", str(port), "--run-dir",
                             str(tmp_path), "--no-demo"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    rl_log, children = tmp_path / "rl.log", []
    try:
        # the loop loads the model, then waits for feedback (slow on a busy CPU)
        _wait_for(lambda: "waiting for 8 new graded" in _text(rl_log), 300, "the loop to start")
        loop = [pid for pid in _children(proc.pid) if " rl " in _cmdline(pid)]
        assert len(loop) == 1
        os.kill(loop[0], signal.SIGKILL)  # a crash
        _wait_for(lambda: _text(rl_log).count("waiting for 8 new graded") == 2, 300, "the loop to come back")
        children = _children(proc.pid)
        assert len(children) == 2 and loop[0] not in children  # the gateway and the new loop
    finally:
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)  # `up` is now stopping its children, which takes seconds
        proc.send_signal(signal.SIGTERM)
        out = _wait_or_kill(proc, children)
    assert "the RL loop exited with -9" in out and "restarting it in 5 s" in out, out
    assert "Traceback" not in out, out
    assert not [pid for pid in children if _alive(pid)], "children outlived `up`"
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)


def test_restart_delays_double_up_to_a_cap_and_reset_after_a_healthy_run():
    from serve.up import Restarts

    restarts = Restarts(first=5, cap=30, healthy_after=600)
    assert [restarts.crashed() for _ in range(5)] == [5, 10, 20, 30, 30]
    assert not restarts.ready()
    restarts.started_now()
    restarts.started -= 601  # ran for ten minutes before this crash
    assert restarts.crashed() == 5
    restarts.due -= 5
    assert restarts.ready()


@pytest.mark.parametrize("argv, option", [
    (["up", "--no-rl", "--no-demo"], "--port"),
    (["serve"], "--port"),
])
def test_a_taken_port_fails_fast_with_a_clear_error(tmp_path, argv, option):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "openvlthinker.cli", *argv, "--port", str(port), "--run-dir",
                               str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"127.0.0.1:{port} is already in use" in done.stderr and option in done.stderr
    assert not (tmp_path / "serve.log").exists()  # nothing was started


def test_up_checks_the_demo_port_before_starting_anything(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        done = subprocess.run([sys.executable, "-m", "openvlthinker.cli", "up", "--port", str(free_port()),
                               "--demo-port", str(taken.getsockname()[1]), "--run-dir", str(tmp_path)],
                              capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--demo-port" in done.stderr, done.stdout + done.stderr
    assert not (tmp_path / "serve.log").exists()


def test_engine_flags_and_extra_serve_flags_reach_the_gateway():
    import argparse

    from serve.up import add_arguments, engine_args

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--engine", "vllm", "--vllm-python", "/venv/bin/python",
                              "--serve-arg=--max-model-len 1024", "--serve-arg", "--vllm-arg='--dtype float32'"])
    assert engine_args(args) == ["--engine", "vllm", "--vllm-python", "/venv/bin/python", "--max-model-len", "1024",
                                 "--vllm-arg=--dtype float32"]
    assert engine_args(parser.parse_args([])) == ["--engine", "transformers"]
    with pytest.raises(ValueError, match="--vllm-python needs --engine vllm"):
        engine_args(parser.parse_args(["--vllm-python", "/venv/bin/python"]))


def test_extra_loop_flags_are_checked_before_anything_starts():
    import argparse

    from serve.up import add_arguments, loop_args

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert loop_args(parser.parse_args(["--rl-arg=--trainer-procs 2", "--rl-arg=--lr=5e-4"])) == [
        "--trainer-procs", "2", "--lr=5e-4"]
    assert loop_args(parser.parse_args([])) == []
    with pytest.raises(ValueError, match="--rl-arg: unrecognized arguments: --learning-rate"):
        loop_args(parser.parse_args(["--rl-arg=--learning-rate=1"]))
    with pytest.raises(ValueError, match="--rl-arg: argument --lr: invalid float value: 'fast'"):
        loop_args(parser.parse_args(["--rl-arg=--lr fast"]))
    with pytest.raises(ValueError, match="--min-new, --out are set by `up` itself"):
        loop_args(parser.parse_args(["--rl-arg=--out /tmp/x --min-new=2"]))
    with pytest.raises(ValueError, match="a command of its own"):
        loop_args(parser.parse_args(["--rl-arg=plot"]))


def test_keys_that_start_with_a_dash_reach_the_children_intact(tmp_path, monkeypatch):
    """A random key is drawn from [A-Za-z0-9_-]: 1 start in 64 got one beginning with "-", which argparse took
    for a flag ("--admin-key: expected one argument") and the gateway exited. The children get KEY=VALUE."""
    import argparse

    from openvlthinker.cli import build_parser
    from serve import up

    args = argparse.Namespace(admin_key="-adm", api_key="-api", host="0.0.0.0", insecure_no_auth=False,
                              demo_port=0, rl_min_new=8, rl_args=["--lr 1e-4"])
    keys = up.Keys(args, tmp_path)
    parser = build_parser()
    serve = parser.parse_args(["serve", *keys.serve_args()])
    assert (serve.admin_key, serve.api_key) == ("-adm", "-api") and keys.demo in serve.trusted_feedback_keys
    argv = {}
    monkeypatch.setattr(up.subprocess, "Popen", lambda cmd, **kw: argv.setdefault(cmd[3], cmd[4:]))
    up._start_demo(args, "http://127.0.0.1:1", keys, tmp_path)
    up._start_loop(args, "http://127.0.0.1:1", keys, "m", tmp_path)
    demo, rl = parser.parse_args(["demo", *argv["demo"]]), parser.parse_args(["rl", *argv["rl"]])
    assert (demo.admin_key, demo.api_key) == ("-adm", keys.demo) and (rl.admin_key, rl.api_key) == ("-adm", "-api")
    assert rl.lr == 1e-4  # --rl-arg reaches the loop
