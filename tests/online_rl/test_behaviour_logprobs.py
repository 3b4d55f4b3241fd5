"""The trainer scores exactly what the server sampled: on real rollouts through a gateway process
(the shipped model, ShapeWorld images, temperature 1), the policy's logprob of every completion
token equals the behaviour logprob the server logged, for the base model and for a served LoRA
version. The loop treats its own rollouts as on-policy (importance weight 1): this is what makes
that true, across the engine's lean forward and mixed-adapter rows and the trainer's PEFT model."""

from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from online_rl.client import GatewayClient
from online_rl.config import RLConfig
from online_rl.loop import shapeworld_prompts
from online_rl.policy import LoraPolicy, UpdateConfig
from online_rl.rounds import collect_rollouts
from openvlthinker.models import DEFAULT_MODEL, random_lora
from openvlthinker.versions import publish
from serve.launcher import ServerProcess

ADMIN = "adm"


def largest_gap(policy: LoraPolicy, rollouts) -> float:
    """The largest |trainer logprob - behaviour logprob| over every completion token."""
    gap = 0.0
    for start in range(0, len(rollouts), 8):
        part = rollouts[start:start + 8]
        logp, _, _ = policy.token_stats(part, grad=False)
        for row, r in zip(logp, part):
            gap = max(gap, (row[:len(r.completion_ids)] - torch.tensor(r.behaviour_logprobs)).abs().max().item())
    return gap


@pytest.mark.slow
def test_trainer_logprobs_equal_the_servers_behaviour_logprobs(tmp_path):
    adapters = tmp_path / "adapters"
    adapter = random_lora(DEFAULT_MODEL, tmp_path / "random-lora", seed=0, scale=0.3)
    publish(adapter, adapters, 1, parent=None, metrics={})
    server = ServerProcess(["--run-dir", str(tmp_path / "run"), "--adapters-dir", str(adapters), "--admin-key", ADMIN,
                            "--max-batch", "16", "--log-level", "warning"], log_path=tmp_path / "server.log")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        client = GatewayClient(server.url, "none", ADMIN)
        client.load("v0001")
        cfg = RLConfig(group_size=4, max_new_tokens=64)
        prompts = shapeworld_prompts(6, 0)  # one question of each family
        # Both versions at once, so the engine's running batch mixes base rows and adapter rows.
        with ThreadPoolExecutor(2) as pool:
            base, tuned = pool.map(lambda model: collect_rollouts(client, prompts, cfg, model, seed=0),
                                   ["openvlthinker", "openvlthinker@v0001"])
    finally:
        server.stop()
        torch.set_num_threads(before)
    torch.set_num_threads(1)
    try:
        assert {r.task for r in base} == {p.record.task for p in prompts} and len(base) == len(tuned) == 24
        fresh = LoraPolicy.create(DEFAULT_MODEL, UpdateConfig())  # a new LoRA starts as the base model
        assert largest_gap(fresh, base) < 1e-3
        served = LoraPolicy.create(DEFAULT_MODEL, UpdateConfig(), adapter_path=str(adapter))
        assert largest_gap(served, tuned) < 1e-3
        # The check can fail: the adapter's tokens are not the base model's.
        assert largest_gap(fresh, tuned) > 0.05
    finally:
        torch.set_num_threads(before)
