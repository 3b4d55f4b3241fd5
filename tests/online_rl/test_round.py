"""One online round against a real gateway on the shipped tiny model: rollouts through the API,
grading, update, atomic publish, server-side load, gate, promote or reject."""

import dataclasses
import json

import httpx
import pytest
import torch
from safetensors.torch import load_file, save_file

from online_rl.client import GatewayClient
from online_rl.config import RLConfig
from online_rl.policy import LoraPolicy
from online_rl.gate import KEEP, PROMOTE, REJECT, Gate, Verdict
from online_rl.rounds import NotVisible, Prompt, keep_informative, run_round, target_for
from online_rl.rollout import Rollout
from openvlthinker.models import DEFAULT_MODEL
from openvlthinker.tiny.shapeworld import FAMILIES, generate, split_seed
from openvlthinker.versions import published_versions
from serve.launcher import ServerProcess


def test_dynamic_sampling_keeps_only_groups_with_signal():
    def r(group, reward, acc):
        return Rollout(prompt_ids=[1], completion_ids=[2], behaviour_logprobs=[0.0], reward=reward, accuracy=acc,
                       group_id=group)
    rollouts = [r("all-right", 1.0, 1.0), r("all-right", 1.0, 1.0), r("mixed", 1.0, 1.0), r("mixed", 0.1, 0.0),
                r("iou", 0.3, 0.3), r("iou", 0.6, 0.6), r("flat", 0.1, 0.0), r("flat", 0.1, 0.0)]
    assert {x.group_id for x in keep_informative(rollouts)} == {"mixed", "iou"}


def test_gate_and_rollouts_send_the_problem_type():
    from online_rl.rounds import metadata_for

    record = generate("chart", 0).record
    for source in ("rl-rollout", "rl-gate"):
        meta = metadata_for(record, source)
        assert meta["problem_type"] == record.problem_type and meta["task_type"] == "chart"
        assert meta["source"] == source and meta["reference_answer"] == record.answer


def test_config_validation():
    with pytest.raises(ValueError, match="unknown advantage"):
        RLConfig(advantage="ppo")
    with pytest.raises(ValueError, match="group_size must be >= 2"):
        RLConfig(group_size=1)
    for bad in (0.0, -1.0, 2.5, float("nan")):
        with pytest.raises(ValueError, match="rollout_temperature must be in"):
            RLConfig(rollout_temperature=bad)
    for bad in ("ocr", ["ocr", ""], [3]):
        with pytest.raises(ValueError, match="skip_tasks must be a list of task names"):
            RLConfig(skip_tasks=bad)
    assert RLConfig.from_mapping({"skip_tasks": ["ocr", " chart "]}).skip_tasks == ("ocr", "chart")
    with pytest.raises(ValueError, match="unknown RL config keys: bogus"):
        RLConfig.from_mapping({"bogus": 1})
    assert RLConfig.from_mapping({"lr": 1e-3, "group_size": 4}).update.lr == 1e-3
    with pytest.raises(ValueError, match="gate_per_family is no longer used"):
        RLConfig.from_mapping({"gate_per_family": 4})
    with pytest.raises(ValueError, match="gate_margin must be in"):
        RLConfig(gate_margin=1.5)
    with pytest.raises(ValueError, match="rollback_check must be true or false"):
        RLConfig(rollback_check="yes")


@dataclasses.dataclass(frozen=True)
class Forced(Gate):
    """The gate with its decision forced (the decision function itself is tested in test_gate.py)."""

    decision: str = PROMOTE
    harm: bool = False  # after a promotion, report harm through the alias

    def decide(self, current, candidate, well_formed=True):
        verdict = super().decide(current, candidate, well_formed)
        return dataclasses.replace(verdict, decision=self.decision if well_formed else REJECT)

    def settled(self, wins, losses, ties, remaining):
        return None

    def roll_back(self, current, candidate, served, served_well_formed=True):
        return Verdict(REJECT, 0, len(served), 0, 1.0, 0.0, "forced") if self.harm else None


def loaded(client):
    return {a["version"] for a in client.adapters()["data"] if a["loaded"]}


@pytest.mark.slow
def test_one_round_publishes_gates_and_serves(tmp_path):
    adapters = tmp_path / "adapters"
    server = ServerProcess(["--model", DEFAULT_MODEL, "--run-dir", str(tmp_path / "run"), "--adapters-dir",
                            str(adapters), "--admin-key", "adm", "--threads", "1", "--log-level", "warning"],
                           log_path=tmp_path / "server.log")
    try:
        torch.set_num_threads(1)
        cfg = RLConfig(endpoint=server.url, admin_key="adm", model=DEFAULT_MODEL, adapters_dir=str(adapters),
                       group_size=4, prompts_per_round=4, max_new_tokens=64, lora_r=4)
        client = GatewayClient(cfg.endpoint, cfg.api_key, cfg.admin_key)
        policy = LoraPolicy.create(DEFAULT_MODEL, cfg.update, lora_r=cfg.lora_r)
        samples = [generate(f, split_seed("train", i)) for i in range(2) for f in ("math_reasoning", "chart")]
        prompts = [Prompt(s.record, [s.image]) for s in samples]
        gate = [Prompt(s.record, [s.image]) for s in (generate(f, split_seed("eval", 0)) for f in ("chart", "ocr"))]
        # A prompt the server refuses (too long for max_new_tokens more) is skipped, not the end of the loop.
        poison = dataclasses.replace(samples[0].record, problem=samples[0].record.problem + " and" * 5000)
        result = run_round(client, policy, [*prompts, Prompt(poison, [samples[0].image])], gate, cfg, round_index=0,
                           gate=Forced())
        assert result.metrics["rollouts"] == 16 and 0 < result.metrics["rollouts_kept"] <= 16
        assert published_versions(adapters) == [1] and result.version == "v0001" and result.decision == PROMOTE
        assert result.promoted and result.metrics["gate_questions"] == 2 and "gate_answers_changed" in result.metrics
        assert result.metrics["version_kl"] >= 0 and "gate_served" in result.metrics
        listing = client.adapters()
        assert listing["promoted"] == "v0001"
        body = {"model": "openvlthinker", "messages": [{"role": "user", "content": "How many?"}], "max_tokens": 4}
        assert httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=60).json()["model"].endswith("@v0001")
        first = client.http.get("/v1/interactions?limit=1", headers=client.admin).json()["data"][0]
        assert first["metadata"]["source"] == "rl-rollout" and len(client.interaction(first["id"])) == 4

        # A broken update (NaN weights) is published, refused by the server, and the alias stays.
        save = policy.save_adapter

        def save_nan(folder):
            out = save(folder)
            weights = load_file(out / "adapter_model.safetensors")
            save_file({k: torch.full_like(v, float("nan")) for k, v in weights.items()}, out / "adapter_model.safetensors")
            return out

        policy.save_adapter = save_nan
        broken = run_round(client, policy, prompts, gate, cfg, round_index=1)
        assert broken.version == "v0002" and broken.decision == "refused" and "NaN" in broken.note
        assert client.adapters()["promoted"] == "v0001"
        policy.save_adapter = save
        policy = LoraPolicy.create(DEFAULT_MODEL, cfg.update, adapter_path=str(adapters / "policy-v0001"))

        # A version that passes the gate but shows harm through the alias after promotion is rolled back.
        rolled = run_round(client, policy, prompts, gate, cfg, round_index=2, gate=Forced(harm=True))
        assert rolled.version == "v0003" and not rolled.promoted and rolled.decision == "rolled_back"
        assert "rolled back" in rolled.note and rolled.metrics["rolled_back"] == 1.0
        assert client.adapters()["promoted"] == "v0001" and loaded(client) == {"v0001"}
        assert httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=60).json()["model"].endswith("@v0001")
        policy = LoraPolicy.create(DEFAULT_MODEL, cfg.update, adapter_path=str(adapters / "policy-v0001"))

        # Inside the noise: the served version stays, the candidate stays loaded and the trainer goes on from it:
        # the next round's rollouts are pinned to it and its child names it as parent.
        kept = run_round(client, policy, prompts[:2], gate, cfg, round_index=3, gate=Forced(decision=KEEP))
        assert kept.decision == KEEP and kept.working == "v0004" and not kept.promoted
        assert client.adapters()["promoted"] == "v0001" and loaded(client) == {"v0001", "v0004"}
        target = target_for(client, cfg, working=kept.working)
        child = run_round(client, policy, prompts[:2], gate, cfg, round_index=4, target=target, gate=Forced(decision=REJECT))
        rollout = next(i for i in client.interactions(limit=1000).data
                       if i.metadata.get("source") == "rl-rollout" and i.adapter_version == "v0004")
        assert rollout.metadata["reference_answer"] in {p.record.answer for p in prompts[:2]}
        manifest = json.loads((adapters / "policy-v0005" / "manifest.json").read_text())
        assert child.decision == REJECT and manifest["parent"] == "v0004" and child.working is None
        assert loaded(client) == {"v0001"}  # a rejection drops the candidate and the trainer's kept version

        # A version published where the server does not look is an error, not a quiet rejection.
        elsewhere = dataclasses.replace(cfg, adapters_dir=str(tmp_path / "elsewhere"))
        with pytest.raises(NotVisible, match="does not find it in its adapters folder"):
            run_round(client, policy, prompts[:1], gate, elsewhere, round_index=5)
    finally:
        server.stop()


def test_skipped_tasks_are_neither_rolled_out_nor_filled_in():
    from online_rl.loop import fill_prompts, shapeworld_prompts, trainable

    mixed = shapeworld_prompts(12, 0)
    assert {p.record.task for p in mixed} == set(FAMILIES)
    kept = trainable(mixed, ("ocr", "chart"))
    assert len(kept) == 8 and not {p.record.task for p in kept} & {"ocr", "chart"}
    filled = fill_prompts(None, 10, 3, ("ocr",))
    assert len(filled) == 10 and "ocr" not in {p.record.task for p in filled}
    assert fill_prompts(None, 5, 3, tuple(FAMILIES)) == [] and fill_prompts(None, 0, 3) == []
    stream = iter(mixed)  # a data file's records: the skipped ones are dropped, so the round comes out short
    assert [p.record.task for p in fill_prompts(stream, 6, 0, ("ocr",))] == [t for t in FAMILIES if t != "ocr"]
