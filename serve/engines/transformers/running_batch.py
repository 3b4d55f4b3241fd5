"""Continuous batching: the set of rows being decoded, which requests join and leave at every step.

The engine core (`core.EngineCore`, one thread) calls `advance(jobs)` in a loop: the newly
arrived requests join (their prompts prefilled, left-padded, images and mixed adapters alike)
and every row already running decodes one token, in one forward (`lean_step.LeanStep`), then
each row's token is picked (`rows.pick_tokens`), the joined rows' caches are merged into the
running batch (`kv_cache.KVBatch`) and the rows that ended leave. So a finished request frees its slot
at once and a new one starts without waiting for the longest row of a batch, as it must with HF
`generate`, and without a prefill forward of its own. Models the lean step does not know take the
model's own forward: the prompts first, then a decoding step for every row.

Positions are explicit: the prefill's (M-RoPE for Qwen3-VL images, via the model's own
`get_rope_index`) and then one more per step and row, so the padding columns that merging
adds never shift a row's rotary positions. Per-row adapters are PEFT's mixed-batch
`adapter_names`. Worker thread only.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass
from typing import Any

import torch

from ..base import EngineError, EngineFailed
from ..inputs import collate
from .lora_adapters import AdapterSet
from .kv_cache import KVBatch
from .lean_step import Decoding, LeanStep, Prompts
from .rows import DecodeContext, Emit, RowState, pick_tokens

__all__ = ["RunningBatch", "prefill_positions"]

log = logging.getLogger(__name__)


def prefill_positions(model: torch.nn.Module, enc: dict[str, Any]) -> torch.Tensor:
    """Position ids of a left-padded prompt batch: (3, B, L) M-RoPE with images, else (B, L)."""
    mask = enc["attention_mask"]
    rope_index = getattr(getattr(model, "model", None), "get_rope_index", None)
    if rope_index is not None and enc.get("image_grid_thw") is not None:
        positions, _ = rope_index(enc["input_ids"], image_grid_thw=enc["image_grid_thw"], video_grid_thw=None,
                                  attention_mask=mask, mm_token_type_ids=enc.get("mm_token_type_ids"))
        return positions
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def _next_positions(positions: torch.Tensor) -> torch.Tensor:
    """Each row's position for its first generated token: one past its prompt's last (B,)."""
    last = positions[..., -1]  # left padding: the last column is real for every row
    return (last.amax(0) if last.ndim == 2 else last) + 1


@dataclass
class _Joining:
    """Requests about to join: their RowStates, collated prompts, positions, adapter names, image features."""

    jobs: list[Any]
    rows: list[RowState]
    enc: dict[str, Any]
    positions: torch.Tensor
    names: list[str] | None
    lean: bool  # the lean step can take them (else the model's forward prefills them)
    vision: tuple[torch.Tensor, list[torch.Tensor]] | None = None


class RunningBatch:
    """The rows in flight, their cache, positions and the tokens to feed at the next step."""

    def __init__(self, adapters: AdapterSet, ctx: DecodeContext, emit: Emit, lean: bool = True):
        self.adapters, self.ctx, self.emit = adapters, ctx, emit
        self._clear()
        self.tokens = 0  # tokens decoded so far (stats)
        # transformers 5 renamed `past_key_values` to `cache`; pass whichever this version takes.
        params = inspect.signature(self._base().forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        # Steps skip the transformers call stack where the model's shape is known.
        self._lean = LeanStep.build(self._base()) if lean else None

    def _base(self) -> torch.nn.Module:
        """The model under the PEFT wrapper (the same object whether or not adapters are loaded)."""
        model = self.adapters.model
        return model.get_base_model() if hasattr(model, "get_base_model") else model

    def _clear(self) -> None:
        self.rows: list[RowState] = []
        self.kv: KVBatch | None = None
        self.next_pos = torch.zeros(0, dtype=torch.long)
        self.last = torch.zeros(0, dtype=torch.long)

    @property
    def size(self) -> int:
        """Rows being decoded."""
        return len(self.rows)

    def advance(self, jobs: list[Any]) -> None:
        """Let `jobs` join (prefilled, first token picked) and decode one token for every running row.

        With the lean step both happen in one forward; otherwise the prompts get the model's
        forward first, then every row (the joined ones too) a decoding step.
        """
        joining = self._prepare(jobs) if jobs else None
        if joining is not None and not (self._lean is not None and joining.lean):
            self._admit_with_model(joining)
            joining = None
        if self._lean is not None:
            self._lean_step(joining)
        else:
            self._model_step()

    # ---- joining -------------------------------------------------------------------------

    def _prepare(self, jobs: list[Any]) -> _Joining | None:
        """Collate the jobs' prompts and encode their images; a bad group fails its own requests, not the batch."""
        model = self.adapters.model
        try:
            with torch.inference_mode():
                names = self.adapters.adapter_names([job.request.adapter for job in jobs])
                enc, prompt_ids = collate([job.inputs for job in jobs], self.ctx.pad_id, model.device, model.dtype)
                positions = prefill_positions(self._base(), enc)
                lean = self._lean is not None and self._lean.handles(enc)
                if not lean and "image_features" in enc:
                    raise EngineError("image features computed by the gateway reached a path that needs pixels "
                                      "(the model's own forward); the gateway sends features only to the lean step")
                vision = self._lean.encode_images(enc) if lean else None
                rows = [RowState(job, job.request, ids, self.ctx, model.device, prefix=job.prefix)
                        for job, ids in zip(jobs, prompt_ids)]
        except Exception as exc:  # noqa: BLE001 - a bad group fails its own requests, not the batch
            self._fail_jobs(jobs, exc)
            return None
        return _Joining(jobs, rows, enc, positions, names, lean, vision)

    def _admit_with_model(self, joining: _Joining) -> None:
        """Prefill `joining` with the model's forward, emit their first tokens and add those that go on."""
        from transformers import DynamicCache

        try:
            with torch.inference_mode():
                cache = DynamicCache()
                logits = self._forward(dict(joining.enc), joining.positions, cache, joining.names)
                tokens, out = pick_tokens(joining.rows, logits)
        except Exception as exc:  # noqa: BLE001 - a bad group fails its own requests, not the batch
            self._fail_jobs(joining.jobs, exc)
            return
        if self._join(joining, cache, tokens):
            self.tokens += len(joining.rows)
            self.emit(out)  # after the rows joined, so `running` already counts them
            self._prune()

    def _join(self, joining: _Joining, cache, tokens: list[int]) -> bool:
        """Merge the joining rows' prompt cache into the batch; False (everything failed) if that breaks."""
        try:
            joined = KVBatch(cache, joining.enc["attention_mask"])
            if self.kv is None:
                self.kv = joined
            else:
                self.kv.extend(joined)
        except Exception as exc:  # noqa: BLE001 - the running cache may be half merged: end every row
            self.fail_all(exc)
            self._fail_jobs(joining.jobs, exc)
            return False
        self.rows.extend(joining.rows)
        self.next_pos = torch.cat([self.next_pos, _next_positions(joining.positions).to(self.next_pos.device)])
        self.last = torch.cat([self.last, torch.tensor(tokens, dtype=torch.long)])
        return True

    # ---- decoding ------------------------------------------------------------------------

    def _lean_step(self, joining: _Joining | None) -> None:
        """One lean forward: the running rows' next tokens and the joining prompts' first tokens."""
        b = len(self.rows)
        rows = self.rows + (joining.rows if joining is not None else [])
        if not rows:
            return
        device = self.adapters.model.device
        try:
            with torch.inference_mode():
                names = self.adapters.adapter_names([row.request.adapter for row in self.rows])
                if names is not None and joining is not None:
                    names = names + joining.names
                decoding = None
                if b:
                    self.kv.grow()
                    decoding = Decoding(self.last.to(device), self.next_pos.to(device), self.kv)
                prompts = Prompts(joining.enc, joining.positions, joining.vision) if joining is not None else None
                logits, cache = self._lean(decoding, prompts, names)
                tokens, out = pick_tokens(rows, logits)
        except Exception as exc:  # noqa: BLE001 - one broken step must not kill the worker
            self.fail_all(exc)
            if joining is not None:
                self._fail_jobs(joining.jobs, exc)
            return
        self.next_pos += 1
        self.last = torch.tensor(tokens[:b], dtype=torch.long)
        if joining is not None and not self._join(joining, cache, tokens[b:]):
            return
        self.tokens += len(rows)
        self.emit(out)
        self._prune()

    def _model_step(self) -> None:
        """One decoding step for every row through the model's own forward."""
        if not self.rows:
            return
        device = self.adapters.model.device
        try:
            with torch.inference_mode():
                names = self.adapters.adapter_names([row.request.adapter for row in self.rows])
                mask = self.kv.grow()
                inputs = {"input_ids": self.last[:, None].to(device), "attention_mask": mask}
                cache = self.kv.as_cache()
                logits = self._forward(inputs, self.next_pos[:, None].to(device), cache, names)
                self.kv.store_last(cache)
                tokens, out = pick_tokens(self.rows, logits)
        except Exception as exc:  # noqa: BLE001 - one broken step must not kill the worker
            self.fail_all(exc)
            return
        self.next_pos += 1
        self.last = torch.tensor(tokens, dtype=torch.long)
        self.tokens += len(self.rows)
        self.emit(out)
        self._prune()

    def _forward(self, inputs: dict[str, Any], positions: torch.Tensor, cache, names: list[str] | None) -> torch.Tensor:
        """Run the model on `inputs` with explicit positions and cache; the last column's logits (B, V)."""
        extra = {"adapter_names": names} if names is not None else {}
        out = self.adapters.model(**inputs, position_ids=positions, use_cache=True, logits_to_keep=1,
                                  **{self._cache_kw: cache}, **extra)
        return out.logits[:, -1]

    # ---- leaving -------------------------------------------------------------------------

    def drop_orphans(self) -> None:
        """Fail rows whose adapter version was unloaded under them (the gateway drains first)."""
        gone = [row for row in self.rows if row.request.adapter is not None
                and row.request.adapter not in self.adapters.internal]
        if gone:
            for row in gone:
                row.finished = True
            self.emit([(row.job, EngineError("the request's adapter was unloaded while it ran")) for row in gone])
            self._prune()

    def fail_all(self, exc: BaseException) -> None:
        """End every row with an error (engine stopping, or a step that failed)."""
        jobs = [row.job for row in self.rows]
        self._clear()
        self._fail_jobs(jobs, exc)  # skips the jobs whose clients already left

    def _fail_jobs(self, jobs: list[Any], exc: BaseException) -> None:
        if isinstance(exc, EngineError):
            error = exc
        else:
            log.exception("decoding %d requests failed", len(jobs), exc_info=exc)
            error = EngineFailed(f"generation failed: {type(exc).__name__}: {exc}")
        self.emit([(job, error) for job in jobs if not getattr(job, "cancelled", False)])

    def _prune(self) -> None:
        keep = [i for i, row in enumerate(self.rows) if row.live]
        if len(keep) == len(self.rows):
            return
        if not keep:
            self._clear()
            return
        order = self.kv.keep(keep)  # the cache refills freed slots with later rows: follow its order
        self.rows = [self.rows[i] for i in order]
        index = torch.tensor(order, dtype=torch.long)
        self.next_pos, self.last = self.next_pos[index], self.last[index]
