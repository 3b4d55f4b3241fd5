"""Decode one batch of requests with a single `model.generate` call (worker thread only).

The batch is left-padded by the processor, so every row's next token sits in the last column
and HF's M-RoPE position bookkeeping (rope_deltas from the attention mask) stays its own
business. Per-row behaviour (sampling knobs, seeds, thinking budget, stops, streaming) lives
in `rows.BatchDecoder`; per-row adapters are PEFT's mixed-batch `adapter_names`.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import torch
from transformers import LogitsProcessorList, StoppingCriteriaList

from .adapters import AdapterSet
from .base import EngineError, EngineFailed
from .inputs import encode_batch
from .rows import BatchDecoder, DecodeContext, Emit, RowState

__all__ = ["decode_batch"]

log = logging.getLogger(__name__)


def decode_batch(jobs: list[Any], adapters: AdapterSet, processor, ctx: DecodeContext, *, emit: Emit,
                 should_abort: Callable[[], bool], on_start: Callable[[BatchDecoder], None] = lambda d: None) -> None:
    """Decode `jobs` together; every job gets its events and a result or an EngineError."""
    model = adapters.model
    rows: list[RowState] = []
    error: EngineError | None = None
    try:
        with torch.inference_mode():
            images = [img for job in jobs for img in job.images]
            enc, prompt_ids = encode_batch(processor, [job.prompt for job in jobs], images, model.device, model.dtype)
            rows = [RowState(job, job.request, ids, ctx, model.device, prefix=job.prefix)
                    for job, ids in zip(jobs, prompt_ids)]
            decoder = BatchDecoder(rows, emit, should_abort)
            on_start(decoder)
            extra = {}
            names = adapters.adapter_names([job.request.adapter for job in jobs])
            if names is not None:
                extra["adapter_names"] = names
            model.generate(**enc, max_new_tokens=max(row.max_tokens for row in rows),
                           logits_processor=LogitsProcessorList([decoder]),
                           stopping_criteria=StoppingCriteriaList([decoder.stopping]), **extra)
    except EngineError as exc:
        error = exc
    except Exception as exc:  # noqa: BLE001 - one bad batch must not kill the worker
        log.exception("batch of %d requests failed", len(jobs))
        error = EngineFailed(f"generation failed: {type(exc).__name__}: {exc}")
    if error is None and should_abort():
        error = EngineError("engine stopped")
    # Rows the decoder did not finish: a failed or aborted batch gives them the error; a row HF
    # stopped without our criterion firing (should not happen) still gets its result.
    rows_by_job = {id(row.job): row for row in rows}
    leftovers: list[tuple[Any, Any]] = []
    for job in jobs:
        row = rows_by_job.get(id(job))
        if getattr(job, "cancelled", False) or (row is not None and row.finished):
            continue
        if error is not None or row is None:
            leftovers.append((job, error or EngineError("generation ended without a result")))
        else:
            leftovers.append((job, row.close("length")))
    if leftovers:
        emit(leftovers)
