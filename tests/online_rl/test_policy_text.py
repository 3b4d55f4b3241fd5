"""LoraPolicy beyond the tiny Qwen3-VL on the CPU: a text-only causal LM trains, gradient checkpointing leaves the
gradient as it was, device and dtype come from `rl`'s flags and config with bad values named, and each update
reports its peak memory. The CUDA test runs only where torch sees a GPU."""

import argparse

import pytest
import torch

from online_rl.cli import add_arguments
from online_rl.config import RLConfig
from online_rl.policy import LoraPolicy, UpdateConfig
from online_rl.rollout import Rollout
from openvlthinker.tiny.build import build_tiny, sample_texts
from openvlthinker.tiny.shapeworld import generate
from openvlthinker.tiny.text_model import text_model_from_shipped

GOOD, BAD = "<answer>7</answer>", "<answer>8</answer>"


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/online_rl/conftest.py


@pytest.fixture(scope="module")
def text_path(tmp_path_factory):
    """The shipped model's trained language model as a Qwen3ForCausalLM: it already writes the answer tags."""
    return str(text_model_from_shipped(tmp_path_factory.mktemp("text") / "shapeworld-text"))


def text_rollouts(policy, answers, images=()):
    """Rollouts of one chat prompt with the given completions, as the server logs them (token ids)."""
    tok = policy.tokenizer
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is 3 + 4?"}], add_generation_prompt=True,
                                     tokenize=True)
    prompt = list(getattr(prompt, "input_ids", prompt))
    out = []
    for text in answers:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        out.append(Rollout(prompt_ids=prompt, completion_ids=ids, behaviour_logprobs=[0.0] * len(ids),
                           images=list(images), group_id="g", task="math"))
    return out


def test_a_text_model_policy_moves_probability_the_right_way(text_path):
    torch.manual_seed(0)
    # A smaller step than the tiny VL test's 5e-3: on this model 3e-4 and more overshoot within a few rounds.
    policy = LoraPolicy.create(text_path, UpdateConfig(lr=1e-4, micro_batch=2, updates_per_round=2), lora_r=4)
    assert type(policy.model.get_base_model()).__name__ == "Qwen3ForCausalLM" and not policy.vision
    rollouts = text_rollouts(policy, [GOOD, BAD, GOOD, BAD])
    before, _, _ = policy.token_stats(rollouts[:2], grad=False)
    for _ in range(4):
        metrics = policy.update(rollouts, torch.tensor([1.0, -1.0, 1.0, -1.0]))
    after, _, _ = policy.token_stats(rollouts[:2], grad=False)
    assert after[0].sum() > before[0].sum() and after[1].sum() < before[1].sum()
    assert {"loss", "grad_norm", "entropy", "step_s", "peak_mem_mb", "peak_mem_growth_mb"} <= set(metrics)
    assert metrics["peak_mem_mb"] >= metrics["peak_mem_growth_mb"] >= 0 and metrics["peak_mem_mb"] > 50
    assert metrics["step_s"] > 0


def test_a_text_model_does_not_score_rollouts_with_images(text_path):
    policy = LoraPolicy.create(text_path, UpdateConfig(), lora_r=4)
    plain, pictured = text_rollouts(policy, [GOOD]) + text_rollouts(policy, [GOOD], [generate("chart", 0).image])
    assert policy.usable([plain, pictured, plain]) == [plain, plain]


def checkpointed_gradient(folder, rollouts_of, checkpointing):
    """The LoRA gradient of one update step, and how often the first decoder layer's MLP ran."""
    torch.manual_seed(0)
    cfg = UpdateConfig(lr=1e-9, micro_batch=2, updates_per_round=1, grad_clip=1e9)
    policy = LoraPolicy.create(folder, cfg, lora_r=4, grad_checkpointing=checkpointing)
    with torch.no_grad():
        for p in policy.model.parameters():
            if p.requires_grad:
                p.normal_(0.0, 0.05)
    decoder = policy.model.get_base_model().base_model
    layer = (decoder.language_model if hasattr(decoder, "language_model") else decoder).layers[0]
    calls, forward = [], layer.mlp.forward

    def counted(*args, **kwargs):  # a wrapper, not a hook: hooks do not run when the backward recomputes a layer
        calls.append(1)
        return forward(*args, **kwargs)

    layer.mlp.forward = counted
    rollouts = rollouts_of(policy)
    policy.update(rollouts, torch.linspace(-1.0, 1.0, len(rollouts)))
    grads = torch.cat([p.grad.flatten() for p in policy.model.parameters() if p.requires_grad])
    return grads, len(calls)


def vl_rollouts(policy):
    from tests.online_rl.test_policy import make_rollouts

    img = generate("chart", 0).image
    return make_rollouts(policy, [GOOD, BAD, "<thinking>3 + 4 = 7</thinking>" + GOOD], [img] * 3)


@pytest.mark.parametrize("kind", ["text", "vl"])
def test_gradient_checkpointing_gives_the_same_gradient(text_path, tmp_path, kind):
    folder = text_path if kind == "text" else str(build_tiny(tmp_path / "vl", sample_texts()))
    rollouts_of = vl_rollouts if kind == "vl" else (lambda p: text_rollouts(p, [GOOD, BAD, "<answer>77</answer>"]))
    plain, plain_calls = checkpointed_gradient(folder, rollouts_of, False)
    ckpt, ckpt_calls = checkpointed_gradient(folder, rollouts_of, True)
    # Each grad-enabled forward runs the layer once more in the backward; the no-grad scorings do not.
    assert ckpt_calls > plain_calls
    assert plain.abs().max() > 0
    torch.testing.assert_close(ckpt, plain, rtol=1e-5, atol=1e-5 * float(plain.abs().max()))


def test_device_and_dtype_come_from_flags_and_config_with_bad_values_named(text_path):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--device", "cuda:1", "--dtype", "bfloat16", "--no-grad-checkpointing"])
    assert (args.device, args.dtype, args.grad_checkpointing) == ("cuda:1", "bfloat16", False)
    assert parser.parse_args([]).grad_checkpointing is None
    cfg = RLConfig.from_mapping({"device": "cpu", "dtype": "float32", "grad_checkpointing": True})
    assert (cfg.device, cfg.dtype, cfg.grad_checkpointing) == ("cpu", "float32", True)
    assert (RLConfig().device, RLConfig().dtype, RLConfig().grad_checkpointing) == ("auto", "auto", None)
    for values, says in (({"device": "gpu"}, "got 'gpu'"), ({"dtype": "fp16"}, "got 'fp16'"),
                         ({"grad_checkpointing": "on"}, "got 'on'")):
        with pytest.raises(ValueError, match=says):
            RLConfig.from_mapping(values)
    with pytest.raises(ValueError, match="dtype must be one of auto, float32, bfloat16, got 'float16'"):
        LoraPolicy.create(text_path, UpdateConfig(), dtype="float16")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device 'cuda' needs CUDA"):
            LoraPolicy.create(text_path, UpdateConfig(), device="cuda")


def test_cpu_defaults_are_float32_without_checkpointing(text_path):
    policy = LoraPolicy.create(text_path, UpdateConfig(), lora_r=4, device="cpu")
    base = policy.model.get_base_model()
    assert policy.device == torch.device("cpu") and base.dtype == torch.float32 and not base.is_activation_checkpointing


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_auto_is_bfloat16_with_checkpointing_and_reports_cuda_memory(text_path):
    torch.manual_seed(0)
    policy = LoraPolicy.create(text_path, UpdateConfig(lr=1e-4, micro_batch=2, updates_per_round=2), lora_r=4,
                               device="cuda")
    base = policy.model.get_base_model()
    assert policy.device.type == "cuda" and base.dtype == torch.bfloat16 and base.is_activation_checkpointing
    assert {p.dtype for n, p in policy.model.named_parameters() if "lora_" in n} == {torch.float32}
    rollouts = text_rollouts(policy, [GOOD, BAD, GOOD, BAD])
    before, _, _ = policy.token_stats(rollouts[:2], grad=False)
    for _ in range(4):
        metrics = policy.update(rollouts, torch.tensor([1.0, -1.0, 1.0, -1.0]))
    after, _, _ = policy.token_stats(rollouts[:2], grad=False)
    assert after[0].sum() > before[0].sum() and after[1].sum() < before[1].sum()
    total_mb = torch.cuda.get_device_properties(0).total_memory / 2**20
    assert 0 < metrics["peak_mem_growth_mb"] <= metrics["peak_mem_mb"] < total_mb
