"""TransformersEngine on the tiny random Qwen3-VL: streaming, batching, sampling, stops, logprobs, queue."""

import asyncio
import math
import time

import pytest
import torch

from serve.engines.base import Engine, EngineError, EngineOverloaded, GenerationResult, TokenEvent


def test_implements_protocol(engine):
    assert isinstance(engine, Engine)
    assert engine.max_context == 4096 and engine.model_name
    assert {"queue_depth", "running", "last_batch_size", "batches_total", "tokens_total"} <= set(engine.stats())


def test_single_request_streams_then_result(engine, h):
    msgs = h.user("How many red circles?", [h.shape_image()])
    events, res = h.run_one(engine, h.request(msgs, max_tokens=16, top_logprobs=2))
    assert all(isinstance(e, TokenEvent) for e in events)
    assert "".join(e.text for e in events) == res.text
    assert [e.token_id for e in events] == res.completion_token_ids
    assert len(res.completion_token_ids) == len(res.completion_logprobs) == len(res.top_logprobs) == len(events)
    assert [e.logprob for e in events] == res.completion_logprobs
    assert len(res.prompt_token_ids) == engine.count_prompt_tokens(msgs, "think")
    assert res.finish_reason in ("stop", "length") and res.adapter is None
    if res.finish_reason == "length":
        assert len(res.completion_token_ids) == 16


def _mixed_requests(h):
    img = h.shape_image
    return [
        h.request(h.user("How many red circles?", [img()]), max_tokens=10, rid="a"),
        h.request(h.user("What is the bounding box of the small blue square? Answer with JSON.",
                         [img(96, 160, "blue"), img(color="green")]), max_tokens=14, rid="b"),
        h.request(h.user("Is the circle left of the square? (A) yes (B) no"), max_tokens=8, rid="c"),
        h.request(h.user("Count."), max_tokens=12, rid="d"),
        h.request(h.user("How many shapes?", [img(200, 90, "yellow")]), max_tokens=9, rid="e"),
    ]


def test_greedy_batch_equals_each_alone(engine, h):
    reqs = _mixed_requests(h)
    alone = [h.run_one(engine, r)[1] for r in reqs]
    batches = engine.stats()["batches_total"]
    together = h.run_many(engine, reqs)
    assert engine.stats()["batches_total"] == batches + 1  # decoded as one batch
    assert engine.stats()["last_batch_size"] == len(reqs)
    for single, (events, res) in zip(alone, together):
        assert res.completion_token_ids == single.completion_token_ids
        assert res.text == single.text == "".join(e.text for e in events)
        assert res.prompt_token_ids == single.prompt_token_ids
        assert res.completion_logprobs == pytest.approx(single.completion_logprobs, abs=1e-4)


def test_prompt_token_count_matches_processor(engine, h):
    for req in _mixed_requests(h):
        _, res = h.run_one(engine, h.request(req.messages, max_tokens=1))
        assert engine.count_prompt_tokens(req.messages, "direct") == len(res.prompt_token_ids)


def test_seeded_sampling_reproducible_alone_and_in_batch(engine, h):
    msgs = h.user("How many red circles?", [h.shape_image()])
    seeded = h.request(msgs, max_tokens=16, temperature=1.0, top_p=0.9, seed=123, rid="s")
    first = h.run_one(engine, seeded)[1]
    assert h.run_one(engine, seeded)[1].completion_token_ids == first.completion_token_ids
    others = [h.request(h.user("Count."), max_tokens=20, temperature=0.7, seed=5),
              h.request(h.user("What is the box?"), max_tokens=6),
              h.request(h.user("How many?", [h.shape_image(color="blue")]), max_tokens=16, temperature=1.3)]
    results = h.run_many(engine, [others[0], seeded, others[1], others[2]])
    assert results[1][1].completion_token_ids == first.completion_token_ids
    other_seed = h.run_one(engine, h.request(msgs, max_tokens=16, temperature=1.0, top_p=0.9, seed=124))[1]
    assert other_seed.completion_token_ids != first.completion_token_ids


def test_temperature_zero_and_tiny_top_p_are_greedy(engine, h):
    msgs = h.user("What is the bounding box of the small red circle?")
    greedy = h.run_one(engine, h.request(msgs, max_tokens=12))[1]
    nucleus = h.run_one(engine, h.request(msgs, max_tokens=12, temperature=1.0, top_p=1e-6, seed=1))[1]
    hot = h.run_one(engine, h.request(msgs, max_tokens=12, temperature=1.0, seed=1))[1]
    assert nucleus.completion_token_ids == greedy.completion_token_ids  # top_p keeps only the best token
    assert hot.completion_token_ids != greedy.completion_token_ids  # sampling at T=1 does sample
    # Logprobs are under the raw distribution whatever the knobs: same tokens, same logprobs.
    assert nucleus.completion_logprobs == pytest.approx(greedy.completion_logprobs, abs=1e-5)


def test_logprobs_match_a_teacher_forced_forward(engine, tiny_dir, h):
    from openvlthinker.models import load

    msgs = h.user("How many red circles?")
    res = h.run_one(engine, h.request(msgs, max_tokens=10, temperature=1.0, seed=7, top_logprobs=5))[1]
    model, _ = load(tiny_dir)
    ids = torch.tensor([res.prompt_token_ids + res.completion_token_ids])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
    n = len(res.prompt_token_ids)
    ref = [logp[n - 1 + i, t].item() for i, t in enumerate(res.completion_token_ids)]
    assert res.completion_logprobs == pytest.approx(ref, abs=1e-4)
    for lp, top in zip(res.completion_logprobs, res.top_logprobs):
        vals = [v for _, v in top]
        assert len(top) == 5 and vals == sorted(vals, reverse=True)
        assert lp <= 0 and all(v <= 0 for v in vals) and lp <= vals[0] + 1e-6
        assert all(isinstance(s, str) for s, _ in top)


def test_greedy_chosen_token_is_top_logprob(engine, h):
    res = h.run_one(engine, h.request(h.user("Count."), max_tokens=8, top_logprobs=1))[1]
    assert [top[0][1] for top in res.top_logprobs] == pytest.approx(res.completion_logprobs)
    no_top = h.run_one(engine, h.request(h.user("Count."), max_tokens=8))[1]
    assert no_top.top_logprobs == []


def test_max_tokens_and_stop_strings(engine, h):
    msgs = h.user("What is the bounding box of the small red circle?", [h.shape_image()])
    full = h.run_one(engine, h.request(msgs, max_tokens=24))[1]
    assert full.finish_reason == "length" and len(full.completion_token_ids) == 24
    text = full.text
    assert len(text) > 6, text
    stop = text[len(text) // 2: len(text) // 2 + 3]
    cut = text.find(stop)
    events, res = h.run_one(engine, h.request(msgs, max_tokens=24, stop=("never-appears", stop)))
    assert res.finish_reason == "stop"
    assert res.text == text[:cut] == "".join(e.text for e in events)
    assert stop not in "".join(e.text for e in events)
    assert res.completion_token_ids == full.completion_token_ids[:len(res.completion_token_ids)]
    short = h.run_one(engine, h.request(msgs, max_tokens=3))[1]
    assert short.finish_reason == "length" and short.completion_token_ids == full.completion_token_ids[:3]


def test_thinking_budget_closes_prefilled_block(engine, h):
    msgs = h.user("How many red circles?", [h.shape_image()]) + [
        {"role": "assistant", "content": [{"type": "text", "text": "<thinking>"}]}]
    close_id = engine._encoder.tokenizer.convert_tokens_to_ids("</thinking>")
    for budget in (1, 4, 9):
        events, res = h.run_one(engine, h.request(msgs, max_tokens=20, mode="think", thinking_budget=budget))
        ids = res.completion_token_ids
        assert ids[budget] == close_id and close_id not in ids[:budget]  # budget+1 tokens after <thinking>
        assert res.budget_hit and res.thinking_tokens == budget + 1
        assert "</thinking>" in res.text
    # Direct mode (or no budget) never forces the tag.
    free = h.run_one(engine, h.request(msgs, max_tokens=12, mode="direct", thinking_budget=3))[1]
    assert not free.budget_hit and close_id not in free.completion_token_ids[:4]


def test_finished_row_is_delivered_before_the_batch_ends(engine, h):
    async def main():
        seen = {"long": 0}
        order = []

        async def consume(name, req):
            async for item in engine.generate(req):
                if isinstance(item, GenerationResult):
                    order.append((name, seen["long"]))
                elif name == "long":
                    seen["long"] += 1

        await asyncio.gather(consume("long", h.request(h.user("Count."), max_tokens=80)),
                             consume("short", h.request(h.user("Count."), max_tokens=2)))
        return order

    order = asyncio.run(main())
    assert order[0][0] == "short" and order[0][1] < 40, order


def test_prompt_too_long_and_bad_params_rejected(engine, h):
    msgs = h.user("Count.")
    with pytest.raises(EngineError, match="context"):
        h.run_one(engine, h.request(msgs, max_tokens=engine.max_context))
    with pytest.raises(EngineError, match="top_logprobs must be within 0..20"):
        h.run_one(engine, h.request(msgs, max_tokens=4, top_logprobs=21))
    with pytest.raises(EngineError, match="logit_bias must be token ids") as info:
        h.run_one(engine, h.request(msgs, max_tokens=4, logit_bias=((10**6, 1.0),)))
    assert info.value.param == "logit_bias"
    with pytest.raises(EngineError, match="image"):
        h.run_one(engine, h.request([{"role": "user", "content": [{"type": "image", "image": "x.png"}]}]))
    with pytest.raises(EngineError, match="image size"):  # aspect ratio over 200: refused before queueing
        h.run_one(engine, h.request(h.user("Count.", [h.shape_image(1, 300)])))
    assert engine.stats()["queue_depth"] == 0


def test_overload_and_cancellation_free_slots(make_engine, h):
    eng = make_engine(max_batch=1, max_queue=1, batch_wait_ms=0)

    async def main():
        running = eng.generate(h.request(h.user("Count."), max_tokens=4000 - 40))
        first = await running.__anext__()  # the long request is decoding now
        assert isinstance(first, TokenEvent) and eng.stats()["running"] == 1
        waiting = asyncio.create_task(h.collect(eng, h.request(h.user("Count."), max_tokens=3)))
        await asyncio.sleep(0.05)
        assert eng.stats()["queue_depth"] == 1
        with pytest.raises(EngineOverloaded):
            await eng.generate(h.request(h.user("Count."), max_tokens=3)).__anext__()
        waiting.cancel()  # a waiting client leaves: its slot frees at once
        await asyncio.gather(waiting, return_exceptions=True)
        assert eng.stats()["queue_depth"] == 0
        t0 = time.perf_counter()
        queued = asyncio.create_task(h.collect(eng, h.request(h.user("Count."), max_tokens=3)))
        await asyncio.sleep(0.05)
        await running.aclose()  # a running client leaves: its row stops, the next batch starts
        _, res = await asyncio.wait_for(queued, timeout=30)
        assert len(res.completion_token_ids) == 3
        return time.perf_counter() - t0

    elapsed = asyncio.run(main())
    assert eng.stats()["tokens_total"] < 2000, "the cancelled row kept decoding"
    print(f"queued request finished {elapsed:.2f}s after the long one was cancelled")


def test_cancelled_row_leaves_batch_mates_intact(engine, h):
    mate = h.request(h.user("How many red circles?"), max_tokens=30)
    alone = h.run_one(engine, mate)[1]

    async def main():
        async def quitter():
            agen = engine.generate(h.request(h.user("Count."), max_tokens=30))
            for _ in range(3):
                await agen.__anext__()
            await agen.aclose()

        return (await asyncio.gather(quitter(), h.collect(engine, mate)))[1][1]

    assert asyncio.run(main()).completion_token_ids == alone.completion_token_ids


@pytest.fixture(scope="module")
def quick_engine(make_engine):
    return make_engine(batch_wait_ms=2, threads=1)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_throughput_note(quick_engine, h, temperature):
    """Not an assertion on speed: prints decode tokens/s at batch 1/4/16 on the tiny model (1 thread)."""
    for batch in (1, 4, 16):
        reqs = [h.request(h.user(f"How many shapes are in picture {i}?"), max_tokens=48, temperature=temperature,
                          seed=i) for i in range(batch)]
        t0 = time.perf_counter()
        results = h.run_many(quick_engine, reqs)
        dt = time.perf_counter() - t0
        tokens = sum(len(r.completion_token_ids) for _, r in results)
        print(f"\nT={temperature} batch {batch:2d}: {tokens} tokens in {dt:.2f}s = {tokens / dt:.0f} tok/s")
        assert all(math.isfinite(lp) for _, r in results for lp in r.completion_logprobs)


def test_lifecycle_not_started_stop_and_bad_path(tiny_dir, tmp_path, h):
    from serve.engines.transformers.engine import TransformersEngine

    eng = TransformersEngine(str(tiny_dir), threads=1, max_batch=1)  # the second request must wait
    with pytest.raises(EngineError, match="not running"):
        eng.count_prompt_tokens(h.user("Count."), "think")
    with pytest.raises(EngineError, match="not running"):
        h.run_one(eng, h.request(h.user("Count.")))

    async def main():
        await eng.start()
        long = eng.generate(h.request(h.user("Count."), max_tokens=3000))
        await long.__anext__()
        waiting = asyncio.create_task(h.collect(eng, h.request(h.user("Count."), max_tokens=3)))
        await asyncio.sleep(0.02)
        await eng.stop()
        with pytest.raises(EngineError, match="stopped"):
            async for _ in long:
                pass
        with pytest.raises(EngineError, match="stopped"):
            await waiting
        await eng.start()  # an engine can be started again
        res = (await h.collect(eng, h.request(h.user("Count."), max_tokens=2)))[1]
        await eng.stop()
        return res

    assert len(asyncio.run(main()).completion_token_ids) == 2
    with pytest.raises(EngineError, match="cannot load model"):
        asyncio.run(TransformersEngine(str(tmp_path / "missing")).start())
