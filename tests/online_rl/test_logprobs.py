"""online_rl.logprobs: the chunked LM head gives the full computation's logprobs, entropies and gradients,
on the tiny Qwen3-VL (with an image) and on a text-only Qwen3, in float32 and in bfloat16."""

import pytest
import torch

from online_rl.logprobs import chunk_tokens_for, completion_stats, split_head
from online_rl.policy import LoraPolicy, UpdateConfig, _batch, _completion_view
from online_rl.rollout import Rollout
from openvlthinker.prompts import to_messages
from openvlthinker.rl import token_entropy
from openvlthinker.tiny.build import build_tiny, sample_texts
from openvlthinker.tiny.shapeworld import generate
from openvlthinker.tiny.text_model import build_text_model

TEXTS = ["<answer>7</answer>", "<thinking>I count 3 and 4. 3 + 4 = 7.</thinking><answer>7</answer>", "<answer>2</answer>"]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/online_rl/conftest.py


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {"vl": str(build_tiny(root / "vl", sample_texts())), "text": str(build_text_model(root / "text"))}


def rollouts_for(policy, kind):
    """Three rollouts of different lengths (right padding in the batch): with an image for the VL model."""
    tok, out = policy.tokenizer, []
    img = generate("chart", 0).image
    for text in TEXTS:
        if kind == "vl":
            prompt = policy.processor.apply_chat_template(to_messages("<image> What is here?", [img]),
                                                          add_generation_prompt=True, tokenize=False)
            prompt_ids = policy.processor(text=[prompt], images=[img], return_tensors="pt")["input_ids"][0].tolist()
        else:
            prompt_ids = tok.apply_chat_template([{"role": "user", "content": "What is 3 + 4?"}],
                                                 add_generation_prompt=True, tokenize=True)
            prompt_ids = list(getattr(prompt_ids, "input_ids", prompt_ids))
        completion = tok(text, add_special_tokens=False)["input_ids"]
        out.append(Rollout(prompt_ids=prompt_ids, completion_ids=completion, behaviour_logprobs=[0.0] * len(completion),
                           images=[img] if kind == "vl" else []))
    return out


def full_stats(policy, rollouts):
    """The reference: every position's logits from the model's own forward, gathered, float32 log-softmax."""
    batch = _batch(rollouts, policy.processor, policy.pad_id, policy.device)
    pos, tgt, mask = _completion_view(rollouts, batch["input_ids"].shape[1])
    logits = policy.model(**batch).logits
    picked = torch.gather(logits, 1, pos[..., None].expand(-1, -1, logits.shape[-1])).float()
    logp = torch.log_softmax(picked, dim=-1).gather(-1, tgt[..., None]).squeeze(-1)
    return logp * mask, token_entropy(picked) * mask, mask


def make_policy(folder, dtype="float32"):
    torch.manual_seed(0)
    policy = LoraPolicy.create(folder, UpdateConfig(), lora_r=4, dtype=dtype)
    with torch.no_grad():  # B = 0 would make the adapter a no-op and A's gradient 0
        for p in policy.model.parameters():
            if p.requires_grad:
                p.normal_(0.0, 0.05)
    return policy


@pytest.mark.parametrize("kind", ["vl", "text"])
@pytest.mark.parametrize("chunk", [1, 4, None])
def test_chunked_values_equal_the_full_computation(folders, kind, chunk):
    policy = make_policy(folders[kind])
    rollouts = rollouts_for(policy, kind)
    policy.chunk_tokens = chunk
    with torch.no_grad():
        ref_logp, ref_ent, mask = full_stats(policy, rollouts)
        logp, ent, got_mask = policy.token_stats(rollouts, grad=False)
    assert torch.equal(mask, got_mask) and not mask.all()  # rows of different lengths: padding is there
    assert logp.dtype == ent.dtype == torch.float32
    assert (logp - ref_logp).abs().max() < 1e-5 and (ent - ref_ent).abs().max() < 1e-5
    assert (logp[~mask] == 0).all() and (ent[~mask] == 0).all()


@pytest.mark.parametrize("kind", ["vl", "text"])
def test_chunked_gradients_equal_the_full_computation(folders, kind):
    """A loss of logprobs and entropies (what the update backpropagates) gives the same LoRA gradient."""
    policy = make_policy(folders[kind])
    rollouts = rollouts_for(policy, kind)
    weights = torch.linspace(-1.0, 1.0, len(rollouts))[:, None]
    params = [p for p in policy.model.parameters() if p.requires_grad]

    def gradient(stats):
        logp, ent, mask = stats()
        loss = (weights * logp * mask).sum() + 0.1 * (ent * mask).sum()
        return torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)])

    policy.model.train()
    ref = gradient(lambda: full_stats(policy, rollouts))
    policy.chunk_tokens = 3  # several checkpointed chunks, one of them short
    got = gradient(lambda: policy.token_stats(rollouts, grad=True))
    assert ref.abs().max() > 0
    # float32 round-off, relative to the gradient's scale (the random text model's logits are large)
    assert (got - ref).abs().max() <= 1e-5 * ref.abs().max() and (got - ref).norm() <= 1e-5 * ref.norm()


def test_bfloat16_base_keeps_float32_lora_and_matches_the_full_computation(folders):
    policy = make_policy(folders["text"], dtype="bfloat16")
    named = list(policy.model.named_parameters())
    assert {p.dtype for n, p in named if "lora_" in n} == {torch.float32}
    assert {p.dtype for n, p in named if "lora_" not in n} == {torch.bfloat16}
    rollouts = rollouts_for(policy, "text")
    policy.chunk_tokens = 2
    with torch.no_grad():
        ref_logp, ref_ent, mask = full_stats(policy, rollouts)
        logp, ent, _ = policy.token_stats(rollouts, grad=False)
    # The same bf16 logits upcast per chunk as in the full computation (equal on this CPU); another matmul
    # blocking may move a logit by one bf16 step, 0.125 at the ~30 these logits reach.
    assert (logp - ref_logp).abs().max() < 0.1 and (ent - ref_ent).abs().max() < 0.1


def test_chunk_size_and_head(folders):
    assert chunk_tokens_for(151_936) == 441 and chunk_tokens_for(10**12) == 1
    policy = make_policy(folders["text"])
    backbone, head = split_head(policy.model)
    assert type(backbone).__name__ == "Qwen3Model" and head is policy.model.get_base_model().lm_head
    with pytest.raises(ValueError, match="no separate backbone"):
        split_head(backbone)
    empty = torch.zeros((1, 0), dtype=torch.long)
    logp, ent = completion_stats(policy.model, {"input_ids": torch.tensor([[1, 2]])}, empty, empty, empty.bool())
    assert logp.shape == ent.shape == (1, 0)
