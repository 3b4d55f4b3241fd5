"""Continuous batching: requests join a running batch mid-decode and leave it the step they end,
and neither the joining nor the leaving changes any row's tokens (cache merge, positions)."""

import asyncio

import pytest
import torch
from transformers import DynamicCache

from serve.engines.base import GenerationResult
from serve.engines.transformers.kv_cache import KVBatch


def _cache(batch, width, layers=2, fill=1.0):
    cache = DynamicCache()
    for i in range(layers):
        kv = torch.full((batch, 2, width, 4), fill + i)
        cache.update(kv, kv.clone(), i)
    return cache


def test_kv_extend_pads_the_narrower_side_on_the_left():
    a = KVBatch(_cache(2, 3, fill=1.0), torch.tensor([[1, 1, 1], [0, 1, 1]]))
    b = KVBatch(_cache(1, 5, fill=10.0), torch.tensor([[1, 1, 1, 1, 1]]))
    a.extend(b)
    assert a.size == 3 and a.width == 5
    assert a.mask.tolist() == [[0, 0, 1, 1, 1], [0, 0, 0, 1, 1], [1, 1, 1, 1, 1]]
    keys, _ = a.layer(1)
    assert keys.shape == (3, 2, 5, 4)
    assert (keys[:2, :, 2:] == 2.0).all() and (keys[2] == 11.0).all()


def test_kv_keep_moves_a_later_row_into_the_freed_slot_and_trims_unused_columns():
    kv = KVBatch(_cache(3, 4), torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1], [0, 1, 1, 1]]))
    assert kv.keep([1, 2]) == [2, 1]  # slot 0 left: the last row takes it
    assert kv.mask.tolist() == [[1, 1, 1], [0, 1, 1]]
    assert all(kv.layer(i)[0].shape == (2, 2, 3, 4) for i in range(2))
    assert kv.grow().tolist() == [[1, 1, 1, 1], [0, 1, 1, 1]]


def test_kv_rows_join_outside_inference_mode_after_a_reallocation_inside_it():
    from serve.engines.transformers.kv_cache import ROOM

    kv = KVBatch(_cache(3, 3), torch.ones(3, 3, dtype=torch.long))
    kv.keep([0, 1])  # a free slot: the next row joins without new buffers
    with torch.inference_mode():  # decoding steps run in inference mode; past ROOM the buffers are reallocated
        for _ in range(ROOM + 1):
            kv.grow()
            for i in range(2):
                kv.append(i, torch.zeros(2, 2, 1, 4), torch.zeros(2, 2, 1, 4))
    kv.extend(KVBatch(_cache(1, 2, fill=5.0), torch.ones(1, 2, dtype=torch.long)))  # the engine joins rows outside it
    assert kv.size == 3 and (kv.layer(0)[0][2, :, -2:] == 5.0).all()


def test_kv_rows_wider_than_the_trimmed_batch_join_when_the_slots_are_full():
    """Slots full and columns trimmed: the new buffers must also make room on the left (a CI find)."""
    kv = KVBatch(_cache(2, 10), torch.tensor([[1] * 10, [0] * 7 + [1] * 3]))
    assert kv.keep([1]) == [1] and kv.width == 3  # the wide row left: columns 0-6 are dropped
    kv.extend(KVBatch(_cache(2, 8, fill=5.0), torch.ones(2, 8, dtype=torch.long)))  # 3 rows > 2 slots
    assert kv.size == 3 and kv.width == 8
    assert kv.mask.tolist() == [[0] * 5 + [1] * 3, [1] * 8, [1] * 8]
    keys, _ = kv.layer(0)
    assert (keys[0, :, 5:] == 1.0).all() and (keys[1:] == 5.0).all()


def _real(kv, layer):
    """Each row's cached keys and values at its real (unmasked) columns."""
    keys, values = kv.layer(layer)
    return [(keys[r][:, m.bool()], values[r][:, m.bool()]) for r, m in enumerate(kv.mask)]


@pytest.mark.parametrize("seed", range(60))
def test_kv_buffers_equal_per_row_concatenation_under_random_joins_leaves_and_steps(seed):
    """Property: whatever rows join (any width), leave (any subset) and decode, every live row's
    real keys and values are exactly its prefill followed by the columns appended to it."""
    gen = torch.Generator().manual_seed(seed)
    layers = 2

    def prefill(rows):
        width = int(torch.randint(1, 16, (1,), generator=gen))
        lengths = torch.randint(1, width + 1, (rows,), generator=gen)
        lengths[0] = width  # a prefill is as wide as its longest prompt
        mask = (torch.arange(width)[None] >= width - lengths[:, None]).long()
        cache = DynamicCache()
        for i in range(layers):
            shape = (rows, 2, width, 4)
            cache.update(torch.randn(shape, generator=gen), torch.randn(shape, generator=gen), i)
        return KVBatch(cache, mask)

    kv = prefill(3)
    expected = [_real(kv, i) for i in range(layers)]  # expected[layer][row] = (keys, values)
    for _ in range(300):
        op = int(torch.randint(0, 4, (1,), generator=gen))
        if op == 0 and kv.size < 40:
            joining = prefill(int(torch.randint(1, 4, (1,), generator=gen)))
            for i in range(layers):
                expected[i] += _real(joining, i)
            kv.extend(joining)
        elif op == 1 and kv.size > 1:
            live = sorted(torch.randperm(kv.size, generator=gen)[: int(torch.randint(1, kv.size, (1,), generator=gen))]
                          .tolist())
            order = kv.keep(live)
            assert sorted(order) == live
            expected = [[rows[r] for r in order] for rows in expected]
        else:
            kv.grow()
            for i in range(layers):
                shape = (kv.size, 2, 1, 4)
                col_k, col_v = torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)
                kv.append(i, col_k, col_v)
                expected[i] = [(torch.cat([k, col_k[r]], 1), torch.cat([v, col_v[r]], 1))
                               for r, (k, v) in enumerate(expected[i])]
        for i in range(layers):
            got = _real(kv, i)
            assert len(got) == len(expected[i]) == kv.size
            assert all(torch.equal(gk, ek) and torch.equal(gv, ev) for (gk, gv), (ek, ev) in zip(got, expected[i]))
        assert kv.mask[:, 0].any(), "columns no row uses are trimmed"


@pytest.mark.parametrize("join_after", [10, 90])  # 90: after the cache buffers were reallocated (ROOM = 64)
def test_late_requests_join_the_running_batch_and_keep_their_tokens(make_engine, h, join_after):
    eng = make_engine(batch_wait_ms=0)
    img = h.shape_image
    long_req = h.request(h.user("How many red circles?", [img()]), max_tokens=120, rid="long")
    late = [h.request(h.user("What is the box?", [img(96, 160, "blue"), img()]), max_tokens=6, rid="late-img"),
            h.request(h.user("Count."), max_tokens=5, rid="late-text")]
    alone = {r.request_id: h.run_one(eng, r)[1] for r in [long_req, *late]}

    async def main():
        order = []

        async def track(req):
            res = (await h.collect(eng, req))[1]
            order.append(req.request_id)
            return res

        stream = eng.generate(long_req)
        ids = [(await stream.__anext__()).token_id for _ in range(join_after)]  # the long row is decoding
        batches = eng.stats()["batches_total"]
        late_tasks = [asyncio.create_task(track(r)) for r in late]
        tail = [item async for item in stream]
        order.append("long")
        return ids, tail, [await t for t in late_tasks], order, eng.stats()["batches_total"] - batches

    ids, tail, late_results, order, joined = asyncio.run(main())
    long_res = tail[-1]
    assert isinstance(long_res, GenerationResult)
    assert len(long_res.completion_token_ids) == 120, "pick a prompt the random model does not end early"
    # The late requests started while the long one decoded and finished first: no waiting for it.
    assert order[-1] == "long" and joined >= 1
    assert long_res.completion_token_ids[:join_after] == ids
    assert long_res.completion_token_ids == alone["long"].completion_token_ids
    for req, res in zip(late, late_results):
        assert res.completion_token_ids == alone[req.request_id].completion_token_ids
        assert res.prompt_token_ids == alone[req.request_id].prompt_token_ids


def test_greedy_tokens_equal_hf_generate(make_engine, tiny_dir, h):
    """An independent reference for positions and cache: HF's own generate on each prompt alone."""
    from openvlthinker.models import load

    model, processor = load(str(tiny_dir))
    eng = make_engine(batch_wait_ms=0)
    img = h.shape_image
    reqs = [h.request(h.user("How many red circles?", [img()]), max_tokens=40),
            h.request(h.user("What is the box?", [img(96, 160, "blue"), img()]), max_tokens=40),
            h.request(h.user("Count."), max_tokens=40)]
    for req in reqs:
        res = h.run_one(eng, req)[1]
        text = processor.apply_chat_template(req.messages, tokenize=False, add_generation_prompt=True)
        images = [p["image"] for p in req.messages[0]["content"] if p["type"] == "image"]
        enc = processor(text=[text], images=images or None, return_tensors="pt")
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=40, do_sample=False, eos_token_id=-1, pad_token_id=0)
        reference = out[0, enc["input_ids"].shape[1]:].tolist()
        n = len(res.completion_token_ids)
        assert res.completion_token_ids == reference[:n]
