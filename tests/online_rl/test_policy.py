"""LoraPolicy: scoring rollout tokens and G²RPO/PPO updates move probability the right way."""

import pytest
import torch

from online_rl.policy import LoraPolicy, UpdateConfig
from online_rl.rollout import Rollout
from openvlthinker.prompts import to_messages
from openvlthinker.tiny.build import build_tiny, sample_texts
from openvlthinker.tiny.shapeworld import generate


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield str(build_tiny(tmp_path_factory.mktemp("tiny"), sample_texts()))
    torch.set_num_threads(before)


def make_rollouts(policy, texts, images):
    proc = policy.processor
    out = []
    for i, (text, img) in enumerate(zip(texts, images)):
        prompt = proc.apply_chat_template(to_messages("<image> What is here?", [img]), add_generation_prompt=True,
                                          tokenize=False)
        prompt_ids = proc(text=[prompt], images=[img], return_tensors="pt")["input_ids"][0].tolist()
        completion = proc.tokenizer(text, add_special_tokens=False)["input_ids"]
        out.append(Rollout(prompt_ids=prompt_ids, completion_ids=completion, behaviour_logprobs=[0.0] * len(completion),
                           images=[img], group_id="g", task="math_reasoning"))
    return out


def test_rollout_validation():
    with pytest.raises(ValueError, match="at least one completion token"):
        Rollout(prompt_ids=[1], completion_ids=[], behaviour_logprobs=[])
    with pytest.raises(ValueError, match="behaviour_logprobs has 1 entries"):
        Rollout(prompt_ids=[1], completion_ids=[1, 2], behaviour_logprobs=[0.0])


def test_token_stats_match_a_plain_forward(tiny_path):
    policy = LoraPolicy.create(tiny_path, UpdateConfig(), lora_r=4)
    img = generate("chart", 0).image
    (r,) = make_rollouts(policy, ["<answer>7</answer>"], [img])
    logp, ent, mask = policy.token_stats([r], grad=False)
    proc = policy.processor
    prompt = proc.apply_chat_template(to_messages("<image> What is here?", [img]), add_generation_prompt=True, tokenize=False)
    full = proc(text=[prompt + "<answer>7</answer>"], images=[img], return_tensors="pt")
    assert full["input_ids"][0].tolist() == r.prompt_ids + r.completion_ids
    with torch.no_grad():
        logits = policy.model(**full).logits[0].float()
    p = len(r.prompt_ids)
    ref = torch.log_softmax(logits[p - 1 : -1], -1).gather(-1, torch.tensor(r.completion_ids)[:, None]).squeeze(-1)
    assert mask.all() and torch.allclose(logp[0], ref, atol=1e-4)
    assert (ent >= 0).all()


def test_updates_raise_good_and_lower_bad_completions(tiny_path):
    torch.manual_seed(0)
    policy = LoraPolicy.create(tiny_path, UpdateConfig(lr=5e-3, micro_batch=2, updates_per_round=2), lora_r=4)
    img = generate("math_reasoning", 0).image
    rollouts = make_rollouts(policy, ["<answer>3</answer>", "<answer>5</answer>", "<answer>3</answer>",
                                      "<answer>5</answer>"], [img] * 4)
    adv = torch.tensor([1.0, -1.0, 1.0, -1.0])
    before, _, _ = policy.token_stats(rollouts[:2], grad=False)
    for _ in range(4):
        metrics = policy.update(rollouts, adv)
    after, _, _ = policy.token_stats(rollouts[:2], grad=False)
    assert after[0].sum() > before[0].sum() and after[1].sum() < before[1].sum()
    assert {"clip_frac", "approx_kl", "entropy", "grad_norm", "loss"} <= set(metrics)


def test_kl_to_the_base_model_holds_the_policy_back(tiny_path):
    """With kl_coef, the reference is the model with the adapter off: it reports kl_ref, and the same
    updates move the rewarded completion less than without it."""
    img = generate("math_reasoning", 0).image
    gains = {}
    for kl in (0.0, 1.0):
        torch.manual_seed(0)
        policy = LoraPolicy.create(tiny_path, UpdateConfig(lr=5e-3, micro_batch=2, updates_per_round=2, kl_coef=kl),
                                   lora_r=4)
        rollouts = make_rollouts(policy, ["<answer>3</answer>", "<answer>5</answer>"], [img] * 2)
        before, _, _ = policy.token_stats(rollouts[:1], grad=False)
        for _ in range(6):
            metrics = policy.update(rollouts, torch.tensor([1.0, -1.0]))
        after, _, _ = policy.token_stats(rollouts[:1], grad=False)
        gains[kl] = (after - before).sum().item()
        assert ("kl_ref" in metrics) == (kl > 0)
        if kl:
            assert metrics["kl_ref"] > 0  # the adapter has moved away from the base by now
            with policy.model.disable_adapter():  # and the base itself is untouched
                base, _, _ = policy.token_stats(rollouts[:1], grad=False)
            assert torch.allclose(base, before, atol=1e-5)
    assert 0 < gains[1.0] < gains[0.0]
    with pytest.raises(ValueError, match="kl_coef"):
        UpdateConfig(kl_coef=-0.1)


@pytest.mark.parametrize("knobs, says", [
    ({"lr": 0.0}, "lr must be a positive number"), ({"lr": float("nan")}, "lr must be a positive number"),
    ({"updates_per_round": 0}, "updates_per_round must be >= 1"), ({"micro_batch": 0}, "micro_batch must be >= 1"),
    ({"clip_high": -0.3}, "clip_high must be a positive number"), ({"grad_clip": float("inf")}, "grad_clip"),
    ({"dual_clip": 0.5}, "dual_clip must be > 1"), ({"entropy_low": 0.7}, "entropy_low <= entropy_high"),
    ({"weight_decay": -1.0}, "weight_decay must be >= 0"), ({"lr": "1e-3"}, "lr must be a number, got '1e-3'"),
])
def test_update_config_names_the_bad_knob(knobs, says):
    with pytest.raises(ValueError, match=says):
        UpdateConfig(**knobs)
    UpdateConfig(dual_clip=None)  # no dual clip is allowed


def test_vision_tower_stays_frozen_and_adapter_saves(tiny_path, tmp_path):
    policy = LoraPolicy.create(tiny_path, UpdateConfig(), lora_r=4)
    trainable = [n for n, p in policy.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n and "visual" not in n for n in trainable)
    folder = policy.save_adapter(tmp_path / "policy-v0001")
    assert (folder / "adapter_config.json").is_file() and (folder / "adapter_model.safetensors").is_file()


def test_off_policy_rows_use_importance_weights(tiny_path):
    policy = LoraPolicy.create(tiny_path, UpdateConfig(micro_batch=4), lora_r=4)
    img = generate("ocr", 0).image
    rollouts = make_rollouts(policy, ["<answer>cat</answer>", "<answer>dog</answer>"], [img] * 2)
    rollouts[1].off_policy = True
    rollouts[1].behaviour_logprobs = [-50.0] * len(rollouts[1].completion_ids)  # far more likely now: capped weight
    metrics = policy.update(rollouts, torch.tensor([1.0, -1.0]))
    assert metrics["is_weight_mean"] > 1.0


def test_completions_with_image_placeholders_are_not_trained_on(tiny_path):
    policy = LoraPolicy.create(tiny_path, UpdateConfig(), lora_r=4)
    pad = policy.processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    good = Rollout(prompt_ids=[1, 2], completion_ids=[7, 8], behaviour_logprobs=[0.0, 0.0])
    bad = Rollout(prompt_ids=[1, 2], completion_ids=[7, pad], behaviour_logprobs=[0.0, 0.0])
    assert policy.usable([good, bad, good]) == [good, good]
    # A conversation's prompt with two images but one image carried (a harvest that lost one) is not scored.
    start = policy.processor.tokenizer.convert_tokens_to_ids("<|vision_start|>")
    img = generate("chart", 0).image
    two = Rollout(prompt_ids=[start, pad, 9, start, pad], completion_ids=[7], behaviour_logprobs=[0.0], images=[img])
    assert policy.usable([two]) == [] and policy.usable([Rollout(**{**two.__dict__, "images": [img, img]})])


def test_the_step_token_mean_weighs_every_token_alike(tiny_path):
    """token_mean="step": a step's gradient is that of one mean over all its tokens, whatever the micro-batching."""
    img = generate("chart", 0).image
    texts = ["<answer>7</answer>", "<thinking>I count 3 and 4. 3 + 4 = 7.</thinking><answer>7</answer>"]

    def gradient(micro_batch, token_mean):
        torch.manual_seed(0)
        cfg = UpdateConfig(lr=1e-9, micro_batch=micro_batch, updates_per_round=1, entropy_coef=0.0, token_mean=token_mean,
                           grad_clip=1e9)
        policy = LoraPolicy.create(tiny_path, cfg, lora_r=4)
        for p in policy.model.parameters():
            if p.requires_grad:
                torch.nn.init.normal_(p, std=0.02)  # B = 0 would make A's gradient 0 and the check empty
        policy.update(make_rollouts(policy, texts, [img, img]), torch.tensor([1.0, -1.0]))
        return torch.cat([p.grad.flatten() for p in policy.model.parameters() if p.requires_grad])

    whole = gradient(2, "step")
    assert torch.allclose(gradient(1, "step"), whole, atol=1e-6)  # two micro-batches, the same mean
    assert not torch.allclose(gradient(1, "micro"), whole, atol=1e-6)  # the short answer's tokens weigh more
    with pytest.raises(ValueError, match="token_mean must be"):
        UpdateConfig(token_mean="sequence")
