"""The engine contract: what the gateway asks of an engine and what it gets back.

The gateway owns HTTP, validation, the reasoning plan, the store and the adapter alias;
an engine only decodes. One GenerationRequest is one completion (the gateway fans out
`n > 1` into n requests sharing a prompt). `Engine.generate` is an async iterator that
yields a TokenEvent per new token and finally exactly one GenerationResult.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Literal, Protocol, runtime_checkable

Mode = Literal["think", "direct"]


class EngineError(RuntimeError):
    """The engine cannot serve a request (bad adapter name, prompt too long, engine down)."""

    def __init__(self, message: str = "", param: str | None = None):
        super().__init__(message)
        self.param = param  # the request parameter at fault, when there is one


class EngineOverloaded(EngineError):
    """The engine's bounded queue is full; the gateway answers 503 with Retry-After."""


class EngineUnavailable(EngineError):
    """The engine is not running (starting, stopping or its worker died); not the client's fault."""


class EngineFailed(EngineError):
    """Decoding itself failed (a bug or a broken model), not the request; the gateway answers 500."""


@dataclass(frozen=True)
class SamplingParams:
    """Decoding knobs of one completion (OpenAI semantics; temperature 0 = greedy)."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    top_logprobs: int = 0  # alternatives per token to report (0..20); chosen-token logprobs are always kept
    # OpenAI's penalties: each token's logit is lowered by frequency_penalty x (times it was generated so far)
    # + presence_penalty x (generated at all). Only the completion's own tokens count, as in OpenAI and vLLM.
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, added to its logit), -100..100
    # vLLM's extras: keep the k most likely tokens (0 = all); drop those below min_p x the top probability;
    # divide positive logits (multiply negative ones) of every prompt and output token by repetition_penalty.
    top_k: int = 0
    min_p: float = 0.0
    repetition_penalty: float = 1.0

    def shapes_logits(self) -> bool:
        """Whether any penalty or bias changes the logits tokens are chosen from."""
        return bool(self.presence_penalty or self.frequency_penalty or self.logit_bias)

    def check(self, vocab_size: int, max_top_logprobs: int) -> None:
        """EngineError naming the first parameter an engine cannot decode with."""
        bad = [token for token, _ in self.logit_bias if not 0 <= token < vocab_size]
        for param, ok, need in (
                ("max_tokens", self.max_tokens >= 1, "at least 1"),
                ("temperature", self.temperature >= 0, "at least 0"),
                ("top_p", 0 < self.top_p <= 1, "within (0, 1]"),
                ("top_logprobs", 0 <= self.top_logprobs <= max_top_logprobs, f"within 0..{max_top_logprobs}"),
                ("top_k", self.top_k >= 0, "at least 0 (0: off)"),
                ("min_p", 0 <= self.min_p <= 1, "within 0..1"),
                ("repetition_penalty", 0 < self.repetition_penalty <= 10, "within (0, 10]"),
                ("logit_bias", not bad, f"token ids of this model's vocabulary (0..{vocab_size - 1}), not {bad[:5]}")):
            if not ok:
                raise EngineError(f"{param} must be {need}", param)


@dataclass(frozen=True)
class GenerationRequest:
    """One completion to decode.

    messages: chat messages in the HF content-part format, images as PIL objects in
      `{"type": "image", "image": <PIL.Image>}` parts (the gateway decoded and checked them).
    mode / thinking_budget: the reasoning plan; in "think" mode the engine enforces the hard
      cap: after `thinking_budget` tokens inside the thinking block it closes the block
      (emits `</thinking>`) and lets the model write the answer.
    adapter: the adapter *version name* to decode with (None = the base model).
    answer_schema: JSON text of a JSON schema the answer inside `<answer>…</answer>` must follow (None =
      free text); the engine holds the whole completion to `engines/grammar.py`'s grammar for it.
    stream: the client reads tokens as they come; False lets an engine fetch the completion in
      one piece (its TokenEvents then all arrive just before the result).
    token_events: the caller reads every TokenEvent; False (a plain answer without logprobs) lets an
      engine deliver only the first one, which tells the caller the request was admitted, and the result.
    """

    request_id: str
    messages: list[dict[str, Any]]
    sampling: SamplingParams
    mode: Mode = "think"
    thinking_budget: int = 0
    adapter: str | None = None
    stream: bool = True
    token_events: bool = True
    answer_schema: str | None = None


@dataclass(frozen=True)
class TokenEvent:
    """One new token: its id, the text it adds (may be empty mid-character), its logprob."""

    token_id: int
    text: str
    logprob: float
    top_logprobs: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class GenerationResult:
    """The finished completion, with everything the interaction store keeps."""

    text: str  # full completion text (thinking + answer, tags included), stop string excluded
    prompt_token_ids: list[int]
    completion_token_ids: list[int]
    completion_logprobs: list[float]  # behaviour logprobs of the chosen tokens, for off-policy RL
    finish_reason: Literal["stop", "length"]
    thinking_tokens: int  # tokens from <thinking> through </thinking>
    budget_hit: bool = False  # the thinking block was closed by the budget
    adapter: str | None = None
    top_logprobs: list[tuple[tuple[str, float], ...]] = field(default_factory=list)


@runtime_checkable
class Engine(Protocol):
    """What every engine provides; methods are called from the gateway's event loop."""

    model_name: str  # the base model's name or path
    max_context: int  # prompt + completion tokens

    async def start(self) -> None:
        """Load the model / start workers; return when ready to serve."""

    async def stop(self) -> None:
        """Finish or cancel in-flight work and release resources."""

    def generate(self, request: GenerationRequest) -> AsyncIterator[TokenEvent | GenerationResult]:
        """Decode one completion: TokenEvents as tokens come, then one GenerationResult.

        Errors surface on the first iteration: EngineOverloaded when the queue is full,
        EngineUnavailable when not running, EngineFailed when decoding broke, and plain
        EngineError for requests it cannot serve (unknown adapter, prompt longer than
        max_context). Cancelling the iterator (client disconnect) frees the request's slot.
        In think mode a thinking_budget <= 0 means no cap. Completion token ids include the
        end-of-turn token and any matched stop string; the text excludes both.
        """

    def count_prompt_tokens(self, messages: list[dict[str, Any]], mode: Mode) -> int:
        """Prompt length in tokens after the chat template and image expansion (for max_tokens checks)."""

    async def load_adapter(self, name: str, path: str) -> None:
        """Load a PEFT LoRA folder under a new, never reused name; EngineError if invalid."""

    async def unload_adapter(self, name: str) -> None:
        """Unload a version once no in-flight request uses it (the gateway drains first)."""

    def loaded_adapters(self) -> list[str]:
        """Names of loaded adapter versions."""

    def stats(self) -> dict[str, float]:
        """Gauges for /metrics: at least queue_depth, running, last_batch_size."""
