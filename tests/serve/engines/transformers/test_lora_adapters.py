"""LoRA versions in the TransformersEngine: mixed batches, validation, load/unload lifecycle."""

import asyncio
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from serve.engines.transformers.lora_adapters import validate_adapter
from serve.engines.base import EngineError


@pytest.fixture(scope="module")
def lora_engine(make_engine, adapter_dirs):
    eng = make_engine(batch_wait_ms=50)
    asyncio.run(eng.load_adapter("policy-v0001", adapter_dirs[0]))
    asyncio.run(eng.load_adapter("openvlthinker@v0002.1", adapter_dirs[1]))  # free-form names
    return eng


def test_mixed_adapter_batch_equals_separate_runs(lora_engine, h):
    img = h.shape_image
    plan = [(None, h.user("How many red circles?", [img()])),
            ("policy-v0001", h.user("How many red circles?", [img()])),
            ("openvlthinker@v0002.1", h.user("Count.")),
            ("policy-v0001", h.user("What is the box?", [img(96, 160, "blue"), img()])),
            (None, h.user("Count."))]
    reqs = [h.request(m, max_tokens=10, adapter=a, rid=str(i)) for i, (a, m) in enumerate(plan)]
    alone = [h.run_one(lora_engine, r)[1] for r in reqs]
    batches = lora_engine.stats()["batches_total"]
    together = [res for _, res in h.run_many(lora_engine, reqs)]
    assert lora_engine.stats()["batches_total"] == batches + 1
    for single, res in zip(alone, together):
        assert res.completion_token_ids == single.completion_token_ids
        assert res.adapter == single.adapter
    # The adapters really change the output (else the test above proves nothing).
    assert alone[0].completion_token_ids != alone[1].completion_token_ids
    base_count = h.run_one(lora_engine, h.request(h.user("Count."), max_tokens=10))[1]
    assert base_count.completion_token_ids == alone[4].completion_token_ids
    assert base_count.completion_token_ids != alone[2].completion_token_ids


def test_unknown_adapter_rejected_before_queueing(lora_engine, h):
    with pytest.raises(EngineError, match="not loaded"):
        h.run_one(lora_engine, h.request(h.user("Count."), adapter="policy-v9999"))
    assert lora_engine.stats()["queue_depth"] == 0


def test_duplicate_name_rejected(lora_engine, adapter_dirs):
    with pytest.raises(EngineError, match="already"):
        asyncio.run(lora_engine.load_adapter("policy-v0001", adapter_dirs[1]))
    assert lora_engine.loaded_adapters() == ["policy-v0001", "openvlthinker@v0002.1"]


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def _edit_tensors(folder, fn):
    path = folder / "adapter_model.safetensors"
    tensors = load_file(str(path))
    fn(tensors)
    save_file(tensors, str(path))


def _first(tensors, part):
    return next(k for k in sorted(tensors) if f"lora_{part}" in k)


def _nan(t):
    t[_first(t, "B")][0, 0] = float("nan")


def _inf(t):
    t[_first(t, "A")][1, 2] = float("inf")


def _wider_a(t):
    k = _first(t, "A")
    t[k] = torch.zeros(t[k].shape[0], t[k].shape[1] + 1)


def _rank_mismatch(t):
    k = _first(t, "B")
    t[k] = torch.zeros(t[k].shape[0], t[k].shape[1] + 2)


def _foreign_module(t):
    k = _first(t, "A")
    t[k.replace("q_proj", "nonexistent_proj").replace("down_proj", "nonexistent_proj")] = t.pop(k)


@pytest.mark.parametrize("break_it, message", [
    (lambda d: shutil.rmtree(d), "does not exist"),
    (lambda d: (d / "adapter_config.json").unlink(), "no adapter_config.json"),
    (lambda d: (d / "adapter_model.safetensors").unlink(), "no adapter_model.safetensors"),
    (lambda d: _edit_tensors(d, _nan), "NaN or infinite"),
    (lambda d: _edit_tensors(d, _inf), "NaN or infinite"),
    (lambda d: _edit_tensors(d, _wider_a), "shape"),
    (lambda d: _edit_tensors(d, _rank_mismatch), "rank"),
    (lambda d: _edit_tensors(d, _foreign_module), "not a LoRA for this base model"),
    (lambda d: (d / "adapter_model.safetensors").write_bytes(b"garbage"), "cannot read"),
])
def test_invalid_adapters_rejected(lora_engine, adapter_dirs, tmp_path, break_it, message):
    folder = _copy(adapter_dirs[0], tmp_path / "bad")
    break_it(folder)
    before = lora_engine.loaded_adapters()
    with pytest.raises(EngineError, match=message):
        asyncio.run(lora_engine.load_adapter("bad-version", str(folder)))
    assert lora_engine.loaded_adapters() == before


@pytest.fixture(scope="module")
def tiny_shapes(tiny_dir):
    from openvlthinker.models import load
    from serve.engines.transformers.lora_adapters import linear_shapes

    return linear_shapes(load(tiny_dir)[0])


@pytest.mark.parametrize("edit, message", [
    ({"target_modules": ["q_proj", "no_such_layer"]}, "not a LoRA for this base model"),
    ({"target_modules": r"vision\..*\.nothing"}, "not a LoRA for this base model"),
    ({"peft_type": "IA3"}, "only LORA"),
    ({"use_dora": True}, "use_dora"),
    ({"modules_to_save": ["lm_head"]}, "modules_to_save"),
])
def test_invalid_adapter_configs_rejected(adapter_dirs, tmp_path, tiny_shapes, edit, message):
    folder = _copy(adapter_dirs[0], tmp_path / "bad")
    cfg = json.loads((folder / "adapter_config.json").read_text())
    cfg.update(edit)
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(EngineError, match=message):
        validate_adapter(folder, tiny_shapes)
    assert validate_adapter(adapter_dirs[0], tiny_shapes)["peft_type"] == "LORA"


def test_unload_then_name_unusable_and_base_still_serves(make_engine, adapter_dirs, h):
    eng = make_engine()
    base = h.run_one(eng, h.request(h.user("Count."), max_tokens=8))[1]
    asyncio.run(eng.load_adapter("v1", adapter_dirs[0]))
    asyncio.run(eng.load_adapter("v2", adapter_dirs[1]))
    tuned = h.run_one(eng, h.request(h.user("Count."), max_tokens=8, adapter="v2"))[1]
    asyncio.run(eng.unload_adapter("v1"))
    assert eng.loaded_adapters() == ["v2"]
    with pytest.raises(EngineError, match="not loaded"):
        h.run_one(eng, h.request(h.user("Count."), adapter="v1"))
    with pytest.raises(EngineError, match="not loaded"):
        asyncio.run(eng.unload_adapter("v1"))
    assert h.run_one(eng, h.request(h.user("Count."), max_tokens=8, adapter="v2"))[1].completion_token_ids \
        == tuned.completion_token_ids
    asyncio.run(eng.unload_adapter("v2"))  # the last one: the base model is unwrapped again
    assert eng.loaded_adapters() == []
    assert h.run_one(eng, h.request(h.user("Count."), max_tokens=8))[1].completion_token_ids \
        == base.completion_token_ids
    asyncio.run(eng.load_adapter("v3", adapter_dirs[1]))  # and can be wrapped again
    assert h.run_one(eng, h.request(h.user("Count."), max_tokens=8, adapter="v3"))[1].completion_token_ids \
        == tuned.completion_token_ids
