"""vLLM's OpenAI server as a managed child process: command line, start, readiness, stop.

The child runs `PYTHON -m vllm.entrypoints.openai.api_server` on a private loopback port,
usually from another virtual environment than the gateway's (`--vllm-python`), because vLLM
pins its own torch and transformers. It gets its own process group, so stopping it also
stops the EngineCore and worker processes vLLM spawns (a kill -9 of the API server alone
would orphan them with their memory), and on Linux it dies with the gateway
(PR_SET_PDEATHSIG) even when the gateway itself is killed. Its output goes to a log file
whose last lines are quoted in every start-up error.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from ..base import EngineError

__all__ = ["KEEP_ALIVE_S", "VllmLaunch", "VllmProcess", "log_tail"]

# How long vLLM keeps an idle connection open (its default is 5 s). The gateway's pool drops its idle connections
# sooner (engine.py), so it never sends a request down one that vLLM is closing at that moment: with vLLM's
# 5 s and aiohttp's 15 s, a request after a lull (a trainer's update step) could fail as a lost connection.
KEEP_ALIVE_S = 60


@dataclass
class VllmLaunch:
    """Everything that decides vLLM's command line and environment (see ServeConfig for each knob)."""

    model: str
    served_name: str = "base"
    python: str = ""  # interpreter with vLLM installed; "" = the gateway's own
    host: str = "127.0.0.1"
    port: int = 0
    max_lora_rank: int = 64
    max_loras: int = 4
    max_images: int = 8
    gpu_memory_utilization: float | None = None  # None: vLLM's default
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    data_parallel_size: int = 1
    max_model_len: int | None = None
    threads: int | None = None  # CPU builds: OpenMP threads of the worker (None: vLLM decides)
    cpu_build: bool | None = None  # vLLM's CPU build (None: look at the interpreter's installed packages)
    extra_args: list[str] = field(default_factory=list)

    def command(self) -> list[str]:
        """The argv that starts the server (extra args last, so they override ours)."""
        cmd = [self.python or sys.executable, "-m", "vllm.entrypoints.openai.api_server",
               "--model", self.model, "--served-model-name", self.served_name,
               "--host", self.host, "--port", str(self.port),
               "--enable-lora", "--max-lora-rank", str(self.max_lora_rank), "--max-loras", str(self.max_loras),
               "--tensor-parallel-size", str(self.tensor_parallel_size),
               "--pipeline-parallel-size", str(self.pipeline_parallel_size),
               "--data-parallel-size", str(self.data_parallel_size),
               # top_logprobs=20 needs 21: vLLM lists the sampled token before the top ones
               "--max-logprobs", "21",
               # answers held to a JSON schema come as llguidance (Lark) grammars, see engines/grammar.py
               "--structured-outputs-config", json.dumps({"backend": "guidance"})]
        if _is_multimodal(self.model):  # sizes vLLM's multimodal memory profiling; moot for text-only models
            cmd += ["--limit-mm-per-prompt", json.dumps({"image": self.max_images, "video": 0})]
        if self.gpu_memory_utilization is not None:
            cmd += ["--gpu-memory-utilization", str(self.gpu_memory_utilization)]
        if self.max_model_len is not None:
            cmd += ["--max-model-len", str(self.max_model_len)]
        if self.is_cpu_build():
            # The loop's trainer runs float32 on the CPU; vLLM-CPU's default is bfloat16, whose behaviour logprobs
            # differ from the trainer's by more than 5e-3 on the tiny model (float32: 1e-5). A --vllm-arg --dtype wins.
            cmd += ["--dtype", "float32"]
        context = self.max_model_len or _context_length(self.model)
        if context is not None and self.is_cpu_build():
            # vLLM-CPU's engine dies on a seeded request whose prompt is prefilled over several steps (it rewinds
            # the request's generator, and torch's CPU generator has no offset): whole prefills only, in a step
            # budget that fits the longest prompt (what vLLM's CPU platform itself does for MLA models).
            cmd += ["--no-enable-chunked-prefill", "--max-num-batched-tokens", str(max(2048, context))]
        return cmd + [arg for extra in self.extra_args for arg in shlex.split(extra)]

    def is_cpu_build(self) -> bool:
        """Whether the interpreter's vLLM is a CPU build (asked once, then remembered)."""
        if self.cpu_build is None:
            self.cpu_build = _is_cpu_build(self.python or sys.executable)
        return self.cpu_build

    def environment(self) -> dict[str, str]:
        """The child's environment: runtime LoRA loading on, CPU threads capped when asked."""
        env = {**os.environ, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True", "PYTHONUNBUFFERED": "1",
               "VLLM_HTTP_TIMEOUT_KEEP_ALIVE": str(KEEP_ALIVE_S)}
        if self.threads is not None:
            # On a shared CPU box vLLM's default binds one OpenMP thread per core; stay polite.
            env.setdefault("OMP_NUM_THREADS", str(self.threads))
            env.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
        return env


_CPU_PROBE = ("import importlib.metadata as m\n"
              "names = {(d.metadata['Name'] or '').lower(): d.version for d in m.distributions()}\n"
              "print(int('vllm-cpu' in names or 'cpu' in names.get('vllm', '')))")


def _is_cpu_build(python: str) -> bool:
    """True when `python` has the vllm-cpu package, or a vllm whose version is tagged cpu (0.9.1+cpu)."""
    try:
        out = subprocess.run([python, "-c", _CPU_PROBE], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.SubprocessError):
        return False  # the start itself then says what is wrong with the interpreter
    return out.stdout.strip() == "1"


def _context_length(model: str) -> int | None:
    """The context window a local config.json gives (a VL model's in text_config); None when unknown."""
    try:
        data = json.loads((Path(model) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    value = (data.get("text_config") or data).get("max_position_embeddings")
    return value if isinstance(value, int) and value > 0 else None


def _is_multimodal(model: str) -> bool:
    """True unless a local config.json says the model has no vision tower (hub ids: assume VL)."""
    config = Path(model) / "config.json"
    if not config.is_file():
        return True
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return True
    return "vision_config" in data


def log_tail(path: Path, lines: int = 30) -> str:
    """The last `lines` lines of a log file ('' when it does not exist yet)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64 * 1024))
            text = fh.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the gateway (the spawning thread) dies."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: stop() still ends the child on a normal shutdown


class VllmProcess:
    """One run of the vLLM server; a restart is a new VllmProcess with the same launch."""

    def __init__(self, launch: VllmLaunch, log_path: Path):
        self.launch, self.log_path = launch, Path(log_path)
        self.url = f"http://{launch.host}:{launch.port}"
        self.proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def spawn(self) -> None:
        """Start the child (call from the event loop's thread: PDEATHSIG follows the spawning thread)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(self.launch.command())}\n".encode())
            log.flush()
            try:
                self.proc = subprocess.Popen(self.launch.command(), stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, env=self.launch.environment(),
                                             start_new_session=True,
                                             preexec_fn=_die_with_parent if sys.platform == "linux" else None)
            except OSError as exc:
                raise EngineError(f"cannot start vLLM with {self.launch.command()[0]!r}: {exc}; pass the "
                                  "interpreter of an environment with vLLM installed as --vllm-python") from exc

    async def wait_ready(self, timeout: float) -> None:
        """Poll /health until 200; EngineError with vLLM's last log lines if it exits or times out."""
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=5) as client:
            while time.monotonic() < deadline:
                if not self.alive():
                    code = self.proc.returncode if self.proc else None
                    raise EngineError(f"vLLM exited with code {code} during start-up; its last log lines "
                                      f"({self.log_path}):\n{log_tail(self.log_path)}")
                try:
                    if (await client.get(f"{self.url}/health")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.5)
        self.kill()
        raise EngineError(f"vLLM did not become ready in {timeout:.0f} s; its last log lines "
                          f"({self.log_path}):\n{log_tail(self.log_path)}")

    async def stop(self, grace: float = 15) -> None:
        """SIGTERM the whole process group, SIGKILL what is left after `grace` seconds."""
        if self.proc is None:
            return
        self._signal_group(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while self.proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        self.kill()

    def kill(self) -> None:
        """SIGKILL the process group (also reaps orphans of a child that already died)."""
        if self.proc is None:
            return
        self._signal_group(signal.SIGKILL)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)  # the group outlives its leader while vLLM's workers run
        except (ProcessLookupError, PermissionError):
            pass
