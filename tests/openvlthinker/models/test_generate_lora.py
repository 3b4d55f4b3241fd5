"""Generation (one image, two images, left-padded batch) and a LoRA step on the tiny Qwen3-VL."""

import time

import pytest
import torch

from openvlthinker.models import LORA_TARGET_MODULES, LORA_TARGET_REGEX, lora_config


def _inputs(proc, texts, images, **kw):
    return proc(text=texts, images=images, return_tensors="pt", **kw)


def _prompt(proc, turn, question, n_images=1):
    return proc.apply_chat_template(turn(question, n_images), tokenize=False, add_generation_prompt=True)


@pytest.mark.parametrize("n_images", [1, 2])
def test_greedy_generate_with_images(tiny, image, turn, n_images):
    model, proc = tiny
    imgs = [image(), image(96, 160, "blue")][:n_images]
    batch = _inputs(proc, [_prompt(proc, turn, "How many circles?", n_images)], imgs)
    out = model.generate(**batch, max_new_tokens=6, do_sample=False)
    new = out[0, batch["input_ids"].shape[1]:]
    assert 1 <= len(new) <= 6
    assert isinstance(proc.decode(new, skip_special_tokens=True), str)
    again = model.generate(**batch, max_new_tokens=6, do_sample=False)
    assert torch.equal(out, again)


def test_left_padded_batch_matches_single_prompts(tiny, image, turn):
    model, proc = tiny
    texts = [_prompt(proc, turn, "What is the bounding box of the small red circle?"), _prompt(proc, turn, "Count.")]
    imgs = [image(), image(color="green")]
    batch = _inputs(proc, texts, imgs, padding=True, padding_side="left")
    assert batch["attention_mask"][1, 0] == 0 and batch["attention_mask"][:, -1].all()  # left padding
    out = model.generate(**batch, max_new_tokens=5, do_sample=False)[:, batch["input_ids"].shape[1]:]
    for i in range(2):
        single = _inputs(proc, [texts[i]], [imgs[i]])
        ref = model.generate(**single, max_new_tokens=5, do_sample=False)[0, single["input_ids"].shape[1]:]
        assert out[i, :len(ref)].tolist() == ref.tolist()


def _training_batch(proc, turn, image, n=8, length=128):
    """``n`` sequences of exactly ``length`` tokens, each with one 128x128 image, labels on the answer."""
    texts = []
    for i in range(n):
        prompt = _prompt(proc, turn, f"How many shapes are in picture {i}?")
        texts.append(prompt + "<thinking>" + "I see a red circle. " * 30 + f"</thinking><answer>{i}</answer><|im_end|>")
    batch = _inputs(proc, texts, [image() for _ in range(n)], padding="max_length", truncation=False,
                    max_length=length)
    batch = {k: v[:, :length] if k in ("input_ids", "attention_mask", "mm_token_type_ids") else v
             for k, v in batch.items()}
    labels = batch["input_ids"].clone()
    labels[batch["attention_mask"] == 0] = -100
    labels[batch["mm_token_type_ids"] != 0] = -100
    return batch, labels


@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
def test_lora_targets_only_language_model_and_trains(tiny_dir, image, turn):
    from peft import get_peft_model

    from openvlthinker.models import load

    model, proc = load(tiny_dir)
    model.train()
    peft_model = get_peft_model(model, lora_config(r=8, alpha=16))
    wrapped = [n for n, m in peft_model.named_modules() if hasattr(m, "lora_A") and hasattr(m, "base_layer")]
    assert wrapped and all(".language_model.layers." in n for n in wrapped)
    assert len(wrapped) == len(LORA_TARGET_MODULES) * model.config.text_config.num_hidden_layers
    import re

    assert all(re.search(LORA_TARGET_REGEX, n) for n in wrapped)
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)

    batch, labels = _training_batch(proc, turn, image)
    assert batch["input_ids"].shape == (8, 128)
    opt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-3)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        loss = peft_model(**batch, labels=labels).loss
        loss.backward()
        grads = [p.grad for n, p in peft_model.named_parameters() if p.requires_grad]
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - t0)
    assert torch.isfinite(loss) and all(g is not None for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    assert all(p.grad is None for n, p in peft_model.named_parameters() if "visual" in n)
    print(f"LoRA step 8x128 tokens + 8 images: {min(times) * 1000:.0f} ms")

    peft_model.eval()
    prompt = _inputs(proc, [_prompt(proc, turn, "How many?")], [image()])
    out = peft_model.generate(**prompt, max_new_tokens=4, do_sample=False)
    assert out.shape[1] > prompt["input_ids"].shape[1]
