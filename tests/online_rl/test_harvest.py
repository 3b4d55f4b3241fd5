"""Feedback reaches training: corrections and reference answers become prompts, thumbs and stars
become off-policy rollouts, the loop's own traffic is skipped, stale versions are dropped."""


import httpx
import pytest
import torch

from online_rl.client import GatewayClient, image_part
from online_rl.config import RLConfig
from online_rl.exported import Rating
from online_rl.harvest import feedback_reward, harvest, materialize
from online_rl.policy import LoraPolicy
from online_rl.rounds import run_round
from openvlthinker.models import DEFAULT_MODEL
from openvlthinker.tiny.shapeworld import generate, split_seed
from serve.launcher import ServerProcess


def test_feedback_rewards_and_versions():
    assert feedback_reward(Rating(thumbs="up")) == 1.0 and feedback_reward(Rating(thumbs="down")) == 0.0
    assert feedback_reward(Rating(rating=5)) == 1.0 and feedback_reward(Rating(rating=2)) == 0.25
    assert feedback_reward(Rating(score=0.7)) == 0.7 and feedback_reward(Rating(correction="3")) is None


@pytest.mark.slow
def test_user_feedback_flows_into_a_round(tmp_path):
    server = ServerProcess(["--model", DEFAULT_MODEL, "--run-dir", str(tmp_path / "run"), "--adapters-dir",
                            str(tmp_path / "adapters"), "--admin-key", "adm", "--threads", "1", "--log-level", "warning"],
                           log_path=tmp_path / "server.log")
    try:
        url = server.url
        sample = generate("math_reasoning", split_seed("train", 5))

        question = [{"role": "user", "content": [image_part(sample.image),
                                                 {"type": "text", "text": "How many circles are there?"}]}]

        def ask(metadata=None, history=()):
            body = {"model": "openvlthinker", "max_tokens": 48, "temperature": 1.0, "metadata": metadata or {},
                    "messages": [*history, *question]}
            return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60).json()["id"]

        def feedback(**kw):
            assert httpx.post(f"{url}/v1/feedback", json=kw, timeout=30).status_code == 200

        earlier = [{"role": "user", "content": [image_part(generate("chart", 3).image),
                                                {"type": "text", "text": "Which bar is the largest?"}]},
                   {"role": "assistant", "content": "The red one."}]
        # A rated answer in a conversation with two images: its prompt's tokens hold both, so both are trained with.
        thumbs, stars, corrected = ask(), ask(history=earlier), ask()
        referenced = ask({"problem_type": "math", "reference_answer": "2"})
        ask({"problem_type": "math", "reference_answer": "9", "source": "rl-rollout"})  # the loop's own: skipped
        feedback(id=thumbs, thumbs="down")
        feedback(id=stars, rating=5)
        feedback(id=corrected, correction="2")

        client = GatewayClient(url, "none", "adm")
        found = harvest(client, None, None, current_version=None, max_staleness=4)
        # Prompts come back pending (where they are stored, and the answer); materialize fetches them.
        assert sorted(p.answer for p in found.prompts) == ["2", "2"]
        assert {p.interaction_id for p in found.prompts} == {corrected, referenced}
        prompts = [materialize(client, p) for p in found.prompts]
        assert sorted(p.record.answer for p in prompts) == ["2", "2"]
        assert {p.record.problem_id.split(":")[0] for p in prompts} == {corrected, referenced}
        assert all(len(p.images) == 1 and p.images[0].size == sample.image.size for p in prompts)
        assert all(p.record.problem_type == "math" and "circles" in p.record.problem for p in prompts)
        assert sorted(r.reward for r in found.logged) == [0.0, 1.0] and all(r.off_policy for r in found.logged)
        assert sorted(len(r.images) for r in found.logged) == [1, 2]
        assert found.feedback_cursor and found.interaction_cursor
        assert harvest(client, found.feedback_cursor, found.interaction_cursor, None, 4).logged == []  # consumed
        assert harvest(client, None, None, current_version="v0009", max_staleness=4).logged == []  # too stale

        torch.set_num_threads(1)
        cfg = RLConfig(endpoint=url, admin_key="adm", adapters_dir=str(tmp_path / "adapters"), group_size=4,
                       prompts_per_round=2, max_new_tokens=48, lora_r=4)
        policy = LoraPolicy.create(DEFAULT_MODEL, cfg.update, lora_r=4)
        result = run_round(client, policy, prompts, [prompts[0]], cfg, 0, logged=found.logged)
        assert result.metrics["logged_rollouts"] == 2 and result.version == "v0001"
        assert "train_is_weight_mean" in result.metrics  # the logged rows went through importance weighting
    finally:
        server.stop()
