"""The engine in a child process: the same tokens as in a thread, adapters, cancels, a crash and its restart."""

import asyncio
import os
import signal
import time

import pytest

from serve.engines.base import EngineError, EngineUnavailable, GenerationResult


@pytest.fixture(scope="module")
def pair(engine_variants):
    """The same model in a thread and in a child process, each with the same LoRA version loaded."""
    return engine_variants("process", (False, True))


def _plan(h):
    img = h.shape_image
    return [h.request(h.user("How many red circles?", [img()]), max_tokens=16, rid="a", top_logprobs=2),
            h.request(h.user("What is the box?", [img(96, 160, "blue"), img()]), max_tokens=12, rid="b", adapter="v1"),
            h.request(h.user("Count."), max_tokens=10, rid="c", temperature=1.0, seed=3),
            h.request(h.user("Count."), max_tokens=10, rid="d", adapter="v1", stop=("a",))]


def test_child_process_decodes_exactly_like_the_thread(pair, h):
    assert pair[True].engine_pid not in (None, os.getpid()) and pair[False].engine_pid is None
    reqs = _plan(h)
    thread = h.run_many(pair[False], reqs)
    child = h.run_many(pair[True], reqs)
    for (te, tr), (ce, cr) in zip(thread, child):
        assert cr.completion_token_ids == tr.completion_token_ids and cr.text == tr.text
        assert cr.prompt_token_ids == tr.prompt_token_ids
        assert cr.completion_logprobs == pytest.approx(tr.completion_logprobs, abs=1e-5)
        assert [e.text for e in ce] == [e.text for e in te]
        assert [[t for t, _ in alts] for alts in cr.top_logprobs] == [[t for t, _ in alts] for alts in tr.top_logprobs]
        assert cr.adapter == tr.adapter
    stats = pair[True].stats()
    assert stats["adapters"] == 1 and stats["restarts"] == 0 and stats["tokens_total"] > 0


def test_adapter_errors_come_back_from_the_child_and_it_keeps_serving(pair, h, tmp_path):
    eng = pair[True]
    with pytest.raises(EngineError, match="does not exist"):
        asyncio.run(eng.load_adapter("bad", str(tmp_path / "missing")))
    with pytest.raises(EngineError, match="not loaded"):
        asyncio.run(eng.unload_adapter("never-loaded"))
    assert eng.loaded_adapters() == ["v1"]
    assert h.run_one(eng, h.request(h.user("Count."), max_tokens=3))[1].finish_reason in ("stop", "length")


def test_a_client_that_leaves_frees_its_row_in_the_child(pair, h):
    eng = pair[True]

    async def leave_early():
        stream = eng.generate(h.request(h.user("Count."), max_tokens=200))
        await stream.__anext__()
        await stream.aclose()

    for _ in range(5):  # the cancel may land before, during or after the step that would emit next
        asyncio.run(leave_early())
        deadline = time.monotonic() + 10
        while eng.stats()["running"] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert eng.stats()["running"] == 0, "the child reports the row it dropped, without another request"


def test_a_killed_child_fails_its_requests_then_restarts_with_the_adapters(make_engine, adapter_dirs, h):
    eng = make_engine(process=True)
    asyncio.run(eng.load_adapter("v1", adapter_dirs[0]))
    req = h.request(h.user("Count."), max_tokens=4, adapter="v1")
    before = h.run_one(eng, req)[1]

    async def killed_mid_request():
        stream = eng.generate(h.request(h.user("Count."), max_tokens=500))
        await stream.__anext__()
        os.kill(eng.engine_pid, signal.SIGKILL)
        return [item async for item in stream]

    with pytest.raises(EngineUnavailable, match="exited"):
        asyncio.run(killed_mid_request())
    deadline = time.monotonic() + 60
    while eng.stats()["restarts"] < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert eng.stats()["restarts"] == 1 and eng.loaded_adapters() == ["v1"]
    after = h.run_one(eng, req)[1]
    assert isinstance(after, GenerationResult) and after.completion_token_ids == before.completion_token_ids


def test_a_restart_that_fails_is_retried_until_the_child_loads_again(tiny_dir, tmp_path, h):
    import shutil

    from serve.engines.transformers.engine import TransformersEngine

    folder = tmp_path / "model"
    shutil.copytree(tiny_dir, folder)
    eng = TransformersEngine(str(folder), process=True)
    asyncio.run(eng.start())
    try:
        folder.rename(tmp_path / "away")  # the next child cannot load the model
        os.kill(eng.engine_pid, signal.SIGKILL)
        time.sleep(2.5)  # at least one failed attempt (the first retry waits 1 s)
        assert eng.stats()["restarts"] == 0
        with pytest.raises(EngineUnavailable, match="restarting"):
            h.run_one(eng, h.request(h.user("Count."), max_tokens=2))
        (tmp_path / "away").rename(folder)
        deadline = time.monotonic() + 60
        while eng.stats()["restarts"] < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert h.run_one(eng, h.request(h.user("Count."), max_tokens=2))[1].finish_reason in ("stop", "length")
    finally:
        asyncio.run(eng.stop())
    assert eng.engine_pid is None


@pytest.mark.parametrize("broken", ["no processor", "corrupt weights"])
def test_a_model_that_cannot_be_loaded_is_a_clear_error(tiny_dir, tmp_path, broken):
    import shutil

    from serve.engines.transformers.engine import TransformersEngine

    if broken == "no processor":  # the gateway's side fails before any child starts
        (tmp_path / "config.json").write_text('{"model_type": "no-such-architecture"}')
    else:  # the processor loads; the child fails on the weights and says why
        shutil.copytree(tiny_dir, tmp_path, dirs_exist_ok=True)
        (tmp_path / "model.safetensors").write_bytes(b"not safetensors")
    eng = TransformersEngine(str(tmp_path), process=True)
    with pytest.raises(EngineError, match="cannot load model") as info:
        asyncio.run(eng.start())
    assert not eng.running
    if broken == "corrupt weights":
        assert "safetensors" in str(info.value).lower() or "header" in str(info.value).lower(), info.value


@pytest.mark.parametrize("process", [False, True])
def test_a_caller_that_reads_only_results_gets_one_event_and_the_same_result(pair, h, process):
    """token_events=False (a plain answer without logprobs): the first event (admission) and the result."""
    import dataclasses

    req = h.request(h.user("How many red circles?", [h.shape_image()]), max_tokens=12, rid="quiet")
    events, result = h.run_one(pair[process], req)
    quiet_events, quiet = h.run_one(pair[process], dataclasses.replace(req, token_events=False))
    assert len(events) == len(result.completion_token_ids) > 1 and len(quiet_events) == 1
    assert quiet.completion_token_ids == result.completion_token_ids and quiet.text == result.text
    assert quiet_events[0].token_id == result.completion_token_ids[0]
