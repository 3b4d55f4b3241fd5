"""The lean step (decoding rows and joining prompts in one forward) and the lean vision tower give what the
model's own forward gives: tokens, logprobs, logits, caches and image features, adapters included."""


import pytest
import torch
from transformers import DynamicCache

from serve.engines.transformers.kv_cache import KVBatch
from serve.engines.transformers.lean_step import Decoding, LeanStep, Prompts
from openvlthinker.models.lean_vision import LeanVision


@pytest.fixture(scope="module")
def engines(engine_variants):
    """The same model twice, with the same two LoRA versions: lean steps and full forwards."""
    return engine_variants("lean_decode", (True, False), adapters=2)


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    from openvlthinker.models import load

    return load(str(tiny_dir))


def _encode(processor, convs):
    """Left-padded model inputs of several conversations, as the engine collates them."""
    from serve.engines.inputs import collate, collect_images, encode_one, render

    prompts = [encode_one(processor, render(processor, m), collect_images(m)) for m in convs]
    return collate(prompts, processor.tokenizer.pad_token_id or 0, "cpu", torch.float32)[0]


def _model_prefill(model, enc):
    """The model's forward over a prompt batch: last-token logits and its cache."""
    from serve.engines.transformers.running_batch import prefill_positions

    cache = DynamicCache()
    logits = model(**enc, position_ids=prefill_positions(model, enc), cache=cache, use_cache=True,
                   logits_to_keep=1).logits[:, -1]
    return logits, cache


def test_lean_and_full_forward_agree_on_a_mixed_batch(engines, h):
    img = h.shape_image
    plan = [(None, h.user("How many red circles?", [img()])),
            ("v1", h.user("How many red circles?", [img()])),
            ("v2", h.user("Count.")),
            ("v1", h.user("What is the box?", [img(96, 160, "blue"), img()])),
            (None, h.user("Count."))]
    # Sampled at temperature 1 with seeds, so every step's whole distribution matters, not only the argmax.
    reqs = [h.request(m, max_tokens=24, adapter=a, rid=str(i), temperature=1.0, seed=i, top_logprobs=3)
            for i, (a, m) in enumerate(plan)]
    lean = [res for _, res in h.run_many(engines[True], reqs)]
    full = [res for _, res in h.run_many(engines[False], reqs)]
    for a, b in zip(lean, full):
        assert a.completion_token_ids == b.completion_token_ids
        assert a.completion_logprobs == pytest.approx(b.completion_logprobs, abs=1e-4)
        assert [[t for t, _ in alts] for alts in a.top_logprobs] == [[t for t, _ in alts] for alts in b.top_logprobs]
    assert len({tuple(r.completion_token_ids) for r in lean}) > 2  # the rows really differ


def test_requests_joining_mid_decode_with_adapters_get_the_full_forwards_tokens(engines, h):
    """Joiners go through the same forward as the running rows' step (adapters per token): their
    sampled tokens and logprobs, and the running row's, equal those of the model's forward."""
    import asyncio

    img = h.shape_image
    long_req = h.request(h.user("How many red circles?", [img()]), max_tokens=40, adapter="v1", rid="long",
                         temperature=1.0, seed=7)
    late = [h.request(h.user("What is the box?", [img(96, 160, "blue"), img()]), max_tokens=12, adapter="v2",
                      rid="a", temperature=1.0, seed=8),
            h.request(h.user("Count."), max_tokens=12, rid="b", temperature=1.0, seed=9)]

    async def staggered(engine):
        stream = engine.generate(long_req)
        for _ in range(5):  # the long row is decoding when the others arrive
            await stream.__anext__()
        tasks = [asyncio.create_task(h.collect(engine, r)) for r in late]
        tail = [item async for item in stream]
        return [tail[-1]] + [(await t)[1] for t in tasks]

    lean, full = (asyncio.run(staggered(engines[flag])) for flag in (True, False))
    for a, b in zip(lean, full):
        assert a.completion_token_ids == b.completion_token_ids
        assert a.completion_logprobs == pytest.approx(b.completion_logprobs, abs=1e-4)


def test_a_prefill_alone_equals_the_model_forward_on_a_padded_batch(tiny, h):
    from serve.engines.transformers.running_batch import prefill_positions

    model, processor = tiny
    img = h.shape_image
    convs = [h.user("How many red circles are in this picture?", [img()]), h.user("Count."),
             h.user("What is the box?", [img(96, 160, "blue"), img()])]
    step = LeanStep.build(model)
    for group in (convs, convs[1:2]):  # padded rows with one and two images and none; text only
        enc = _encode(processor, group)
        with torch.inference_mode():
            ref, ref_cache = _model_prefill(model, enc)
            assert step.handles(enc)
            lean, cache = step(None, Prompts(enc, prefill_positions(model, enc), step.encode_images(enc)), None)
        assert torch.allclose(lean, ref, atol=1e-5)
        real = enc["attention_mask"].bool()[:, None, :, None]
        for a, b in zip(cache.layers, ref_cache.layers):  # padding columns may differ; they are masked
            assert torch.allclose(a.keys * real, b.keys * real, atol=1e-5)
            assert torch.allclose(a.values * real, b.values * real, atol=1e-5)


def test_a_deepstack_layer_last_is_trimmed_to_the_tokens_whose_logits_are_wanted(tiny_dir, h):
    """The last layer runs only for the decoding rows' and each prompt's last token; when that layer also takes
    DeepStack features (here: the model cut to its first two layers, both DeepStack ones), a kept token that is an
    image placeholder still gets its features, and the logits equal the model's forward."""
    from openvlthinker.models import load
    from serve.engines.transformers.running_batch import prefill_positions

    model, processor = load(str(tiny_dir))
    text = model.model.language_model
    depth = len(model.config.vision_config.deepstack_visual_indexes)
    assert depth < len(text.layers)
    text.layers = text.layers[:depth]
    model.config.text_config.num_hidden_layers = text.config.num_hidden_layers = depth
    img = h.shape_image
    enc = _encode(processor, [h.user("How many red circles are in this picture?", [img()]), h.user("Count."),
                              h.user("What is the box?", [img(96, 160, "blue"), img()])])
    # One prompt cut right after its image's placeholders, so that its last (kept) token is an image token.
    image = _encode(processor, [h.user("Look.", [img()])])
    end = int((image["input_ids"][0] == model.config.image_token_id).nonzero().max()) + 1
    cut = {k: (v[:, :end] if k in ("input_ids", "attention_mask", "mm_token_type_ids") else v) for k, v in image.items()}
    step = LeanStep.build(model)
    for batch in (enc, cut):
        with torch.inference_mode():
            ref, _ = _model_prefill(model, batch)
            lean, cache = step(None, Prompts(batch, prefill_positions(model, batch), step.encode_images(batch)), None)
        assert len(cache.layers) == depth
        assert torch.allclose(lean, ref, atol=1e-5)


def test_decoding_rows_and_joining_prompts_in_one_forward_equal_two_model_forwards(tiny, h):
    """The running rows' next-token logits and cache column, and the joiners' first-token logits and
    cache, are those of a decoding step and of a prefill through the model, each on its own."""
    from serve.engines.transformers.running_batch import prefill_positions

    model, processor = tiny
    img = h.shape_image
    running = _encode(processor, [h.user("How many red circles?", [img()]), h.user("Count the shapes.")])
    joining = _encode(processor, [h.user("What is the box?", [img(96, 160, "blue")]), h.user("Count.")])
    step = LeanStep.build(model)
    with torch.inference_mode():
        logits, cache = _model_prefill(model, running)
        tokens = logits.argmax(-1)
        positions = prefill_positions(model, running)[..., -1].amax(0) + 1
        # Reference decoding step: the model's forward over the prompt cache, one token per row.
        ref_cache = DynamicCache()
        for i, layer in enumerate(cache.layers):
            ref_cache.update(layer.keys.clone(), layer.values.clone(), i)
        mask = torch.cat([running["attention_mask"], torch.ones(2, 1, dtype=torch.long)], 1)
        ref_next = model(input_ids=tokens[:, None], attention_mask=mask, position_ids=positions[:, None],
                         cache=ref_cache, use_cache=True, logits_to_keep=1).logits[:, -1]
        ref_join, ref_join_cache = _model_prefill(model, joining)

        kv = KVBatch(cache, running["attention_mask"])
        kv.grow()
        join_pos = prefill_positions(model, joining)
        both, join_cache = step(Decoding(tokens, positions, kv),
                                Prompts(joining, join_pos, step.encode_images(joining)), None)
    assert both.shape[0] == 4
    assert torch.allclose(both[:2], ref_next, atol=1e-5)
    assert torch.allclose(both[2:], ref_join, atol=1e-5)
    for i, layer in enumerate(ref_cache.layers):  # the column the step appended
        keys, values = kv.layer(i)
        assert torch.allclose(keys[:, :, -1], layer.keys[:, :, -1], atol=1e-5)
        assert torch.allclose(values[:, :, -1], layer.values[:, :, -1], atol=1e-5)
    real = joining["attention_mask"].bool()[:, None, :, None]
    for a, b in zip(join_cache.layers, ref_join_cache.layers):
        assert torch.allclose(a.keys * real, b.keys * real, atol=1e-5)


def test_lora_in_the_vision_tower_is_left_to_the_model(tiny_dir):
    from peft import LoraConfig, get_peft_model

    from openvlthinker.models import load

    model, _ = load(str(tiny_dir))
    step = LeanStep.build(model)
    images = {"input_ids": None, "pixel_values": None}
    assert step.handles(images) and step.handles({"input_ids": None})
    get_peft_model(model, LoraConfig(r=2, target_modules=["qkv"]))  # the vision blocks' attention
    assert not step.handles(images) and step.handles({"input_ids": None})
    assert not step.handles({"pixel_values_videos": None})


def test_only_known_models_get_a_lean_step(tiny):
    model, _ = tiny
    assert LeanStep.build(model) is not None
    assert LeanStep.build(torch.nn.Linear(2, 2)) is None
    assert LeanVision.build(torch.nn.Linear(2, 2)) is None


def test_patch_embedding_as_a_matmul_equals_the_convolution(tiny_dir):
    from openvlthinker.models import load
    from serve.engines.transformers.lean_layers import linear_patch_embed

    model, _ = load(str(tiny_dir))
    embed = model.model.visual.patch_embed
    pixels = torch.randn(64, embed.in_channels * embed.temporal_patch_size * embed.patch_size ** 2)
    with torch.inference_mode():
        expected = embed(pixels)
        assert linear_patch_embed(model)
        assert torch.allclose(embed(pixels), expected, atol=1e-5)
    assert not linear_patch_embed(torch.nn.Linear(2, 2))


def test_fused_projections_equal_the_modules_with_and_without_adapters(tiny_dir, adapter_dirs):
    from openvlthinker.models import load
    from serve.engines.transformers.lora_adapters import AdapterSet
    from serve.engines.transformers.lean_layers import fuse_layer

    model, _ = load(str(tiny_dir))
    layer = model.model.language_model.layers[0]
    qkv, gate_up = fuse_layer(layer)
    assert layer.self_attn.q_proj.weight.data_ptr() == qkv.weight.data_ptr()  # views: nothing stored twice
    adapters = AdapterSet(model)
    x = torch.randn(5, 1, layer.self_attn.q_proj.in_features)
    for names in (None, "load"):
        if names == "load":  # PEFT wraps the modules in place; the fused matrix stays theirs
            adapters.load("v1", adapter_dirs[0])
            names = adapters.adapter_names(["v1", None, "v1", None, "v1"])
        kwargs = {"adapter_names": names} if names else {}
        with torch.inference_mode():
            expected = [getattr(layer.self_attn, p)(x, **kwargs) for p in ("q_proj", "k_proj", "v_proj")]
            expected += [getattr(layer.mlp, p)(x, **kwargs) for p in ("gate_proj", "up_proj")]
            got = qkv(x, names) + gate_up(x, names)
        assert qkv.valid() and all(torch.equal(a, b) for a, b in zip(got, expected))
    assert hasattr(layer.self_attn.q_proj, "lora_A")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_queries_and_keys_are_normed_and_rotated_as_the_separate_ones(tiny_dir, adapter_dirs, dtype):
    """With q/k/v fused, queries and keys share one norm and one rotation: bit for bit the separate path
    (in bfloat16 too, where the norm's order of casting and scaling matters)."""
    from openvlthinker.models import load
    from serve.engines.transformers.lora_adapters import AdapterSet
    from serve.engines.transformers.lean_layers import attention_inputs, fuse_layer, signed_sin

    model, _ = load(str(tiny_dir), dtype=dtype)
    text = model.model.language_model
    layer = text.layers[1]
    h = torch.randn(6, 1, text.config.hidden_size, dtype=dtype)
    cos, sin = text.rotary_emb(h, torch.arange(3, 9)[None].expand(3, -1)[..., None])
    cos, sin = cos[:, None], signed_sin(sin[:, None])
    qkv, _ = fuse_layer(layer)
    adapters = AdapterSet(model)
    for names in (None, "load"):
        if names == "load":
            adapters.load("v1", adapter_dirs[0])
            names = adapters.adapter_names(["v1", None, "v1", None, "v1", None])
        with torch.inference_mode():
            separate = attention_inputs(layer, h, names, cos, sin, None)
            fused = attention_inputs(layer, h, names, cos, sin, qkv)
        assert all(a.shape == b.shape and torch.equal(a, b) for a, b in zip(separate, fused))
