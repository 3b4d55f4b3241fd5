"""Continuous batching: the set of rows being decoded, which requests join and leave at every step.

The engine core (`core.EngineCore`, one thread) alternates two calls. `admit(jobs)` prefills
newly arrived requests together (left-padded, images and mixed adapters alike), picks their
first tokens and merges their caches into the running batch (`kv.KVBatch`). `step()` runs one decoding forward for
every row at once, picks each row's next token (`rows.pick_tokens`) and drops the rows that
ended, so a finished request frees its slot at once and a new one starts without waiting for
the longest row of a batch, as it must with HF `generate`.

Positions are explicit: the prefill's (M-RoPE for Qwen3-VL images, via the model's own
`get_rope_index`) and then one more per step and row, so the padding columns that merging
adds never shift a row's rotary positions. Per-row adapters are PEFT's mixed-batch
`adapter_names`. Worker thread only.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

import torch

from .adapters import AdapterSet
from .base import EngineError, EngineFailed
from .inputs import collate
from .kv import KVBatch
from .lean_decode import LeanDecoder
from .lean_prefill import LeanPrefill
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


class RunningBatch:
    """The rows in flight, their cache, positions and the tokens to feed at the next step."""

    def __init__(self, adapters: AdapterSet, ctx: DecodeContext, emit: Emit, lean: bool = True):
        self.adapters, self.ctx, self.emit = adapters, ctx, emit
        self._clear()
        self.tokens = 0  # tokens decoded so far (stats)
        # transformers 5 renamed `past_key_values` to `cache`; pass whichever this version takes.
        params = inspect.signature(self._base().forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        # Decoding steps skip the transformers call stack where the model's shape is known.
        self._lean = LeanDecoder.build(self._base()) if lean else None
        self._prefill = LeanPrefill.build(self._base()) if lean else None

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

    # ---- joining -------------------------------------------------------------------------

    def admit(self, jobs: list[Any]) -> None:
        """Prefill `jobs` together, emit their first tokens and add those that go on to the batch."""
        from transformers import DynamicCache

        model = self.adapters.model
        try:
            with torch.inference_mode():
                names = self.adapters.adapter_names([job.request.adapter for job in jobs])
                enc, prompt_ids = collate([job.inputs for job in jobs], self.ctx.pad_id, model.device, model.dtype)
                positions = prefill_positions(self._base(), enc)
                cache = DynamicCache()
                if self._prefill is not None and self._prefill.handles(enc):
                    logits = self._prefill(enc, positions, cache, names)
                else:
                    logits = self._forward(dict(enc), positions, cache, names)
                rows = [RowState(job, job.request, ids, self.ctx, model.device, prefix=job.prefix)
                        for job, ids in zip(jobs, prompt_ids)]
                tokens, out = pick_tokens(rows, logits)
        except Exception as exc:  # noqa: BLE001 - a bad group fails its own requests, not the batch
            self._fail_jobs(jobs, exc)
            return
        try:
            joining = KVBatch(cache, enc["attention_mask"])
            if self.kv is None:
                self.kv = joining
            else:
                self.kv.extend(joining)
        except Exception as exc:  # noqa: BLE001 - the running cache may be half merged: end every row
            self.fail_all(exc)
            self._fail_jobs(jobs, exc)
            return
        self.tokens += len(rows)
        self.rows.extend(rows)
        self.next_pos = torch.cat([self.next_pos, _next_positions(positions).to(self.next_pos.device)])
        self.last = torch.cat([self.last, torch.tensor(tokens, dtype=torch.long)])
        self.emit(out)  # after the rows joined, so `running` already counts them
        self._prune()

    # ---- decoding ------------------------------------------------------------------------

    def step(self) -> None:
        """One token for every row; finished and abandoned rows leave the batch."""
        if not self.rows:
            return
        device = self.adapters.model.device
        try:
            with torch.inference_mode():
                names = self.adapters.adapter_names([row.request.adapter for row in self.rows])
                mask = self.kv.grow()
                if self._lean is not None:
                    logits = self._lean(self.last.to(device), self.next_pos.to(device), self.kv, names)
                else:
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
