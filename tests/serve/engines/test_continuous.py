"""Continuous batching: requests join a running batch mid-decode and leave it the step they end,
and neither the joining nor the leaving changes any row's tokens (cache merge, positions)."""

import asyncio

import torch
from transformers import DynamicCache

from serve.engines.base import GenerationResult
from serve.engines.kv import KVBatch


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
    keys = a.cache.layers[1].keys
    assert keys.shape == (3, 2, 5, 4)
    assert (keys[:2, :, :2] == 0).all() and (keys[:2, :, 2:] == 2.0).all() and (keys[2] == 11.0).all()


def test_kv_keep_drops_rows_and_trims_unused_columns():
    kv = KVBatch(_cache(3, 4), torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1], [0, 1, 1, 1]]))
    kv.keep([2, 1])
    assert kv.mask.tolist() == [[1, 1, 1], [0, 1, 1]]
    assert all(layer.keys.shape == (2, 2, 3, 4) for layer in kv.cache.layers)
    assert kv.grow().tolist() == [[1, 1, 1, 1], [0, 1, 1, 1]]


def test_kv_append_equals_concatenation_through_room_growth_extend_and_keep():
    from serve.engines.kv import ROOM

    kv = KVBatch(_cache(2, 3), torch.tensor([[1, 1, 1], [0, 1, 1]]))
    expected = [(layer.keys.clone(), layer.values.clone()) for layer in kv.cache.layers]
    for step in range(ROOM + 5):  # past the first room, so it is reallocated once
        kv.grow()
        for i in range(2):
            col_k, col_v = torch.randn(2, 2, 1, 4), torch.randn(2, 2, 1, 4)
            keys, values = kv.append(i, col_k, col_v)
            expected[i] = (torch.cat([expected[i][0], col_k], -2), torch.cat([expected[i][1], col_v], -2))
            assert torch.equal(keys, expected[i][0]) and torch.equal(values, expected[i][1])
        if step == 2:
            kv.extend(KVBatch(_cache(1, 4, fill=7.0), torch.ones(1, 4, dtype=torch.long)))
            kv.keep([0, 2])  # rows joined and left between steps: the room is rebuilt from the new tensors
            expected = [(layer.keys.clone(), layer.values.clone()) for layer in kv.cache.layers]
    assert kv.width == kv.cache.layers[0].keys.shape[-2]


def test_late_requests_join_the_running_batch_and_keep_their_tokens(make_engine, h):
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
        ids = [(await stream.__anext__()).token_id for _ in range(10)]  # the long row is decoding
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
    assert long_res.completion_token_ids[:10] == ids
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
