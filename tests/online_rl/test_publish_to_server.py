"""online_rl -> serve over HTTP: a LoRA trained by LoraPolicy, published atomically, is loaded,
promoted and served by a real gateway process; rollback restores the base model."""

import httpx
import pytest
import torch

from online_rl.policy import LoraPolicy, UpdateConfig
from online_rl.rollout import Rollout
from openvlthinker.tiny.build import build_tiny, sample_texts
from openvlthinker.versions import publish
from serve.launcher import ServerProcess

ADMIN = {"Authorization": "Bearer admin-secret"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return str(build_tiny(tmp_path_factory.mktemp("tiny"), sample_texts()))


def first_token_logprob(url: str, model: str) -> float:
    body = {"model": model, "messages": [{"role": "user", "content": "How many circles are there?"}],
            "max_tokens": 1, "temperature": 0, "logprobs": True, "reasoning_effort": "none"}
    resp = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)
    assert resp.status_code == 200, resp.text
    data = resp.json()
    return data["choices"][0]["logprobs"]["content"][0]["logprob"], data["model"]


@pytest.mark.slow
def test_trained_adapter_is_published_loaded_promoted_and_rolled_back(tiny, tmp_path):
    torch.manual_seed(0)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    policy = LoraPolicy.create(tiny, UpdateConfig(lr=0.05, micro_batch=2, updates_per_round=1), lora_r=4)
    tok = policy.processor.tokenizer
    prompt = tok("<|im_start|>user\nHow many?<|im_end|>\n<|im_start|>assistant\n")["input_ids"]
    completions = [tok(t, add_special_tokens=False)["input_ids"] for t in ("<answer>3</answer>", "<answer>4</answer>")]
    rollouts = [Rollout(prompt_ids=prompt, completion_ids=c, behaviour_logprobs=[0.0] * len(c), group_id="g")
                for c in completions]
    for _ in range(3):
        policy.update(rollouts, torch.tensor([1.0, -1.0]))
    trained = policy.save_adapter(tmp_path / "trained")
    torch.set_num_threads(before)

    adapters = tmp_path / "adapters"
    server = ServerProcess(["--model", tiny, "--run-dir", str(tmp_path / "run"), "--adapters-dir", str(adapters),
                            "--admin-key", "admin-secret", "--threads", "1", "--log-level", "warning"],
                           log_path=tmp_path / "server.log")
    try:
        base_lp, base_name = first_token_logprob(server.url, "openvlthinker")
        publish(trained, adapters, 1, parent=None, metrics={"reward": 0.1})
        loaded = httpx.post(f"{server.url}/v1/adapters/load", json={"version": "v0001"}, headers=ADMIN, timeout=60)
        assert loaded.status_code == 200, loaded.text
        assert httpx.post(f"{server.url}/v1/adapters/promote", json={"version": "v0001"}, headers=ADMIN,
                          timeout=60).status_code == 200
        new_lp, new_name = first_token_logprob(server.url, "openvlthinker")
        assert new_name.endswith("@v0001") and new_lp != pytest.approx(base_lp, abs=1e-4)
        listed = httpx.get(f"{server.url}/v1/adapters", headers=ADMIN, timeout=30).json()
        assert "v0001" in str(listed) and "reward" in str(listed)
        assert httpx.post(f"{server.url}/v1/adapters/rollback", headers=ADMIN, timeout=60).status_code == 200
        back_lp, back_name = first_token_logprob(server.url, "openvlthinker")
        assert back_name == base_name and back_lp == pytest.approx(base_lp, abs=1e-5)
    finally:
        server.stop()
