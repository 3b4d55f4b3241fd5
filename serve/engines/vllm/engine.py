"""The production engine: vLLM's OpenAI server as a managed child, spoken to over loopback HTTP.

The gateway keeps everything above the engine line (API, store, reasoning plan, adapter
alias and drain); this engine forwards each completion to vLLM as chat requests (streamed when the client streams)
(`decode.py` runs the passes that enforce the thinking budget), loads and unloads LoRA
versions through vLLM's runtime endpoints under names that are never reused, and supervises
the child: if it dies, it is started again and every loaded version is loaded again under
its same name (a fresh process has no cache to confuse). The gateway never imports vLLM.
Prompts are counted locally with the model's own tokenizer, without a round trip. The upstream
client is aiohttp: with 16 requests in flight httpx spent 1.5-1.8 ms of the event loop's CPU per
request (most of it checking its pooled connections), aiohttp 0.3 ms (bench/upstream_client.py).
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp

from openvlthinker.data import png_data_url

from ..base import EngineError, EngineFailed, EngineOverloaded, EngineUnavailable, GenerationRequest, GenerationResult, Mode, TokenEvent
from .decode import Upstream, decode
from .process import KEEP_ALIVE_S, VllmLaunch, VllmProcess

__all__ = ["VllmEngine"]

log = logging.getLogger("serve.vllm")
MAX_TOP_LOGPROBS = 20  # vLLM's default --max-logprobs
BASE = "base"  # vLLM's --served-model-name for the base model; adapter versions get their own names
# Lost connections and timeouts talking to vLLM: the engine is unavailable (503), not the request's fault.
_TRANSPORT_ERRORS = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, asyncio.TimeoutError)


class VllmEngine:
    """Engine protocol on a vLLM OpenAI server child process (see VllmLaunch for its command line)."""

    def __init__(self, launch: VllmLaunch, run_dir: str | Path, *, max_queue: int = 64, start_timeout: float = 600,
                 restart: bool = True):
        if max_queue < 1 or start_timeout <= 0:
            raise ValueError("max_queue must be >= 1 and start_timeout > 0")
        launch.served_name = BASE
        self.launch, self.run_dir = launch, Path(run_dir)
        self.model_name = launch.model
        self.max_context = launch.max_model_len or 0  # replaced by vLLM's own figure once it runs
        self.max_queue, self.start_timeout, self.restart_on_exit = max_queue, start_timeout, restart
        self._proc: VllmProcess | None = None
        self._client: aiohttp.ClientSession | None = None
        self._tokenizer = self._processor = self._upstream = self._encoder = None
        self._adapters: dict[str, str] = {}  # name -> folder, in load order
        self._ready = False
        self._stopping = False
        self._monitor: asyncio.Task | None = None
        self._in_flight = 0
        self._stats = {"restarts": 0, "tokens_total": 0}

    # ---- lifecycle -------------------------------------------------------------------------

    @property
    def log_path(self) -> Path:
        return self.run_dir / "vllm.log"

    @property
    def pid(self) -> int | None:
        """The vLLM server's process id (also written to RUN_DIR/vllm.pid)."""
        return self._proc.pid if self._proc else None

    def health(self) -> str | None:
        """None while vLLM serves; otherwise why not (the gateway's /health answers 503 with it)."""
        if self._proc is not None and not self._proc.alive():  # polled now: the monitor looks only every 0.5 s
            return (f"vLLM (pid {self._proc.pid}) exited with code {self._proc.returncode}; the gateway is "
                    f"restarting it (log: {self.log_path})")
        if not self._ready:
            return f"vLLM is not serving (starting, restarting or stopped; log: {self.log_path})"
        return None

    async def start(self) -> None:
        """Load the tokenizer, start vLLM and wait until it serves; EngineError with its log if not."""
        if self._ready:
            return
        from openvlthinker.thinking import close_tag_suffix_ids

        from ...launcher import free_port

        self._stopping = False
        self._processor, self._tokenizer = await asyncio.to_thread(load_tokenizers, self.model_name)
        from ..inputs import PromptEncoder

        # Counting renders and tokenizes as the transformers engine does (same template, same image sizing).
        self._encoder = PromptEncoder(self._processor or self._tokenizer, self._tokenizer)
        self._vocab = len(self._tokenizer)  # logit_bias ids are checked against it
        if not self.launch.port:
            self.launch.port = free_port()
        self._upstream = Upstream(self._stream, self._once, close_tag_suffix_ids(self._tokenizer),
                                  copy.deepcopy(self._tokenizer))
        # Connecting (or waiting for a pooled connection) may take 30 s; reading has no limit (a long decode).
        self._client = aiohttp.ClientSession(base_url=f"http://{self.launch.host}:{self.launch.port}",
                                             timeout=aiohttp.ClientTimeout(total=None, connect=30, sock_read=None),
                                             connector=aiohttp.TCPConnector(limit=self.max_queue + 8,
                                                                            keepalive_timeout=KEEP_ALIVE_S / 2))
        try:
            await self._launch()
        except BaseException:
            await self.stop()  # leave no half-started vLLM workers or open pool behind
            raise
        self._monitor = asyncio.create_task(self._watch(), name="vllm-monitor")

    async def _launch(self) -> None:
        """Start one vLLM process and wait for it (kills it again if it never gets ready)."""
        self._proc = VllmProcess(self.launch, self.log_path)
        self._proc.spawn()
        (self.run_dir / "vllm.pid").write_text(str(self._proc.pid), encoding="utf-8")
        log.info("started vLLM (pid %s) on %s; log: %s", self._proc.pid, self._proc.url, self.log_path)
        await self._proc.wait_ready(self.start_timeout)
        async with self._client.get("/v1/models") as resp:
            models = await resp.json()
        self.max_context = int(next(m.get("max_model_len") for m in models["data"] if m["id"] == BASE))
        self._ready = True

    async def stop(self) -> None:
        """Stop supervising, end vLLM (and its workers), close the connection pool."""
        self._stopping, self._ready = True, False
        if self._monitor is not None:
            self._monitor.cancel()
            await asyncio.gather(self._monitor, return_exceptions=True)
            self._monitor = None
        if self._proc is not None:
            await self._proc.stop()
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def _watch(self) -> None:
        """Restart vLLM whenever it exits on its own, then reload every loaded version."""
        delay = 1.0
        while not self._stopping:
            await asyncio.sleep(0.5)
            if self._proc.alive() or self._stopping or not self.restart_on_exit:
                continue
            self._ready = False
            log.error("vLLM (pid %s) exited with %s; restarting. Last log lines:\n%s", self._proc.pid,
                      self._proc.returncode, self._log_tail())
            self._proc.kill()  # its EngineCore and workers may still hold memory
            try:
                await self._launch()
                for name, path in list(self._adapters.items()):
                    await self._post("/v1/load_lora_adapter", {"lora_name": name, "lora_path": path})
                self._stats["restarts"] += 1
                delay = 1.0
                log.warning("vLLM restarted (pid %s) with adapters %s", self._proc.pid, list(self._adapters))
            except Exception as exc:  # noqa: BLE001 - keep trying: the gateway stays up meanwhile
                self._ready = False
                self._proc.kill()
                log.error("vLLM restart failed (%s); retrying in %.0f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    def _log_tail(self) -> str:
        from .process import log_tail

        return log_tail(self.log_path, 15)

    # ---- requests --------------------------------------------------------------------------

    def count_prompt_tokens(self, messages: list[dict[str, Any]], mode: Mode) -> int:
        """Prompt length after the chat template and image expansion, with the local tokenizer."""
        from ..inputs import collect_images

        if self._encoder is None:
            raise EngineUnavailable("engine is not running (call start() first)")
        if self._processor is None and collect_images(messages):
            raise EngineError(f"{self.model_name} is a text-only model; send the request without images")
        return self._encoder.prepare(messages).n_tokens

    async def generate(self, request: GenerationRequest) -> AsyncIterator[TokenEvent | GenerationResult]:
        """TokenEvents as vLLM streams them, then one GenerationResult (errors on first iteration)."""
        self._admit(request)
        from ..inputs import assistant_prefix

        model = request.adapter or BASE
        messages = _openai_messages(request.messages)
        self._in_flight += 1
        admitted = False
        try:
            async for item in decode(request, model, messages, assistant_prefix(request.messages), self._upstream):
                if isinstance(item, TokenEvent):
                    self._stats["tokens_total"] += 1
                    if admitted and not request.token_events:  # the caller reads the first event and the result
                        continue
                    admitted = True
                yield item
        finally:
            self._in_flight -= 1

    def _admit(self, request: GenerationRequest) -> None:
        if not self._ready:
            raise EngineUnavailable("vLLM is not running (starting, restarting or stopped)")
        if self._in_flight >= self.max_queue:
            raise EngineOverloaded(f"{self._in_flight} requests in flight to vLLM (limit {self.max_queue})")
        s = request.sampling
        s.check(self._vocab, MAX_TOP_LOGPROBS)
        if request.adapter is not None and request.adapter not in self._adapters:
            raise EngineError(f"adapter {request.adapter!r} is not loaded; loaded: {self.loaded_adapters()}")

    async def _stream(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """POST a streamed chat (or, with a token `prompt`, completions) request; yield each SSE chunk as a dict."""
        if self._client is None:
            raise EngineUnavailable("vLLM is not running")
        try:
            async with self._client.post(_path(body), json=body) as resp:
                if resp.status != 200:
                    _raise_for(resp.status, await resp.text(errors="replace"))
                lines = _lines(resp.content.iter_any())
                async for line in lines:
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    chunk = json.loads(line[6:])
                    if "error" in chunk:
                        _raise_for(int(chunk["error"].get("code") or 500), json.dumps(chunk))
                    if any(c.get("finish_reason") for c in chunk.get("choices") or []):
                        # Only "[DONE]" follows: read it now, so the connection goes back to the
                        # pool instead of being closed when the caller stops iterating.
                        async for _ in lines:
                            pass
                    yield chunk
        except _TRANSPORT_ERRORS as exc:
            raise EngineUnavailable(f"lost the connection to vLLM ({type(exc).__name__})") from exc

    async def _once(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self._post(_path(body), body)

    async def _post(self, path: str, body: dict[str, Any]) -> Any:
        if self._client is None:
            raise EngineUnavailable("vLLM is not running")
        try:
            async with self._client.post(path, json=body) as resp:
                status, text = resp.status, await resp.text(errors="replace")
        except _TRANSPORT_ERRORS as exc:
            raise EngineUnavailable(f"lost the connection to vLLM ({type(exc).__name__})") from exc
        if status != 200:
            _raise_for(status, text)
        try:
            return json.loads(text)
        except ValueError:
            return text  # the LoRA endpoints answer plain text

    # ---- adapters --------------------------------------------------------------------------

    async def load_adapter(self, name: str, path: str) -> None:
        """Load a PEFT LoRA folder into vLLM under a new name (never reloaded in place)."""
        if not isinstance(name, str) or not name.strip() or name == BASE:
            raise EngineError(f"adapter name must be a non-empty string other than {BASE!r}")
        if name in self._adapters:
            raise EngineError(f"adapter name {name!r} is already loaded; load each version under a new name")
        if not self._ready:
            raise EngineUnavailable("vLLM is not running (starting, restarting or stopped)")
        folder = Path(path).resolve()
        for required in ("adapter_config.json", "adapter_model.safetensors"):
            if not (folder / required).is_file():
                raise EngineError(f"adapter folder {folder} has no {required}")
        await self._post("/v1/load_lora_adapter", {"lora_name": name, "lora_path": str(folder)})
        self._adapters[name] = str(folder)

    async def unload_adapter(self, name: str) -> None:
        """Unload a version from vLLM (the gateway drains its requests first)."""
        if name not in self._adapters:
            raise EngineError(f"adapter {name!r} is not loaded")
        del self._adapters[name]  # even if vLLM is down: a restart must not bring it back
        if self._ready:
            await self._post("/v1/unload_lora_adapter", {"lora_name": name})

    def loaded_adapters(self) -> list[str]:
        """Names of the loaded adapter versions, in load order."""
        return list(self._adapters)

    def stats(self) -> dict[str, float]:
        """running (requests in flight to vLLM), restarts, tokens_total, adapters; vLLM queues itself."""
        return {"queue_depth": 0.0, "running": float(self._in_flight), "last_batch_size": float(self._in_flight),
                "restarts": float(self._stats["restarts"]), "tokens_total": float(self._stats["tokens_total"]),
                "adapters": float(len(self._adapters)), "ready": float(self._ready)}


def load_tokenizers(model: str) -> tuple[Any, Any]:
    """(processor or None, tokenizer) of a model folder or cached hub id, for counting prompt tokens."""
    from openvlthinker.models import load_prompt_processor

    loaded = load_prompt_processor(model)  # a missing folder or an offline hub id fails here, with a hint
    if hasattr(loaded, "image_processor"):
        return loaded, copy.deepcopy(loaded.tokenizer)  # a private copy: counting runs on the loop
    return None, loaded  # a text-only model: its tokenizer


def _path(body: dict[str, Any]) -> str:
    """vLLM's route for a pass: completions for a prompt of token ids, chat for messages."""
    return "/v1/completions" if "prompt" in body else "/v1/chat/completions"


async def _lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[str]:
    """The lines (without line endings) of a body arriving as `chunks`, however it is cut and however long a
    line is (aiohttp's own line reader refuses lines longer than its buffer limit, 128 KiB)."""
    pending = b""
    async for data in chunks:
        pending += data
        *complete, pending = pending.split(b"\n")
        for line in complete:
            yield line.rstrip(b"\r").decode()
    if pending:
        yield pending.rstrip(b"\r").decode()


def _raise_for(status: int, text: str) -> None:
    """Map a vLLM error answer to the engine's errors (its message quoted)."""
    try:
        message = json.loads(text)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = text.strip()[:500]
    if status >= 500:
        raise EngineFailed(f"vLLM answered {status}: {message}")
    raise EngineError(f"vLLM rejected the request: {message}")


def _openai_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """HF content-part messages (PIL images) -> OpenAI chat messages (PNG data URLs; text-only as strings)."""
    out = []
    for message in messages:
        content = message.get("content")
        if not isinstance(content, list):
            out.append({"role": message["role"], "content": content or ""})
            continue
        if not any(isinstance(p, dict) and p.get("type") == "image" for p in content):
            # One string: the local template joins text parts the same way (prompt counts agree).
            out.append({"role": message["role"], "content": "".join(p.get("text", "") for p in content)})
            continue
        parts = []
        for part in content:
            if part.get("type") == "image":
                parts.append({"type": "image_url", "image_url": {"url": png_data_url(part["image"])}})
            else:
                parts.append({"type": "text", "text": part.get("text", "")})
        out.append({"role": message["role"], "content": parts})
    return out


