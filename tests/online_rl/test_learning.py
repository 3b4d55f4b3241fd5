"""The product's promise, end to end on the CPU: a few online rounds against a real gateway make
the served model better on the tasks it trains on, the better version is what is served, and
users chatting meanwhile never see a failed request while versions are loaded and promoted."""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from openai import OpenAI

from online_rl.client import GatewayClient
from online_rl.config import RLConfig
from online_rl.loop import served_policy
from online_rl.policy import UpdateConfig
from online_rl.rounds import Prompt, messages_for, metadata_for, run_round, target_for
from openvlthinker.models import DEFAULT_MODEL
from openvlthinker.rewards import grade
from openvlthinker.tiny.shapeworld import generate, split_seed
from serve.launcher import ServerProcess


def sampled_reward(client: GatewayClient, prompts: list[Prompt], model: str) -> tuple[float, float]:
    """Mean reward and accuracy of 8 seeded samples (temperature 1) per prompt from `model`."""

    def one(i: int):
        prompt = prompts[i]
        resp = client.chat(messages_for(prompt), model=model, n=8, temperature=1.0, max_tokens=128,
                           metadata=metadata_for(prompt.record, "rl-gate"), seed=10_000 + i)
        return [grade(prompt.record, c.text, require_thinking=c.mode == "think")
                for c in client.interaction(resp["id"])]

    with ThreadPoolExecutor(4) as pool:
        scores = [s for group in pool.map(one, range(len(prompts))) for s in group]
    return sum(s.overall for s in scores) / len(scores), sum(s.accuracy for s in scores) / len(scores)


class Users:
    """Two users chatting with the served alias in a loop, through the official SDK."""

    def __init__(self, url: str):
        self.client = OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=120)
        self.failures: list[Exception] = []
        self.answered_by: set[str] = set()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._chat, daemon=True) for _ in range(2)]
        for t in self._threads:
            t.start()

    def _chat(self) -> None:
        while not self._stop.is_set():
            try:
                resp = self.client.chat.completions.create(
                    model="openvlthinker", max_tokens=8, messages=[{"role": "user", "content": "How many circles?"}])
                self.answered_by.add(resp.model)
            except Exception as exc:  # noqa: BLE001 - every failure fails the test
                self.failures.append(exc)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=120)


@pytest.mark.slow
def test_rounds_raise_reward_serve_the_better_version_and_users_never_fail(tmp_path):
    adapters = tmp_path / "adapters"
    server = ServerProcess(["--model", DEFAULT_MODEL, "--run-dir", str(tmp_path / "run"), "--adapters-dir",
                            str(adapters), "--admin-key", "adm", "--log-level", "warning"],
                           log_path=tmp_path / "server.log")
    try:
        torch.set_num_threads(1)
        # The gate is the loop's paired test, on the 8 trained questions, at 80% confidence: with 8 questions
        # that is 3 better answers and none worse (or 4 and 1, 6 and 2) before a version is served.
        cfg = RLConfig(endpoint=server.url, admin_key="adm", model=DEFAULT_MODEL, adapters_dir=str(adapters),
                       group_size=8, prompts_per_round=8, max_new_tokens=128, update=UpdateConfig(lr=2e-3),
                       gate_confidence=0.8)
        client = GatewayClient(server.url, "none", "adm")
        torch.manual_seed(0)
        policy = served_policy(cfg, None)
        # The trained tasks: counting arithmetic and bar charts, a small fixed set of questions.
        prompts = [Prompt(s.record, [s.image]) for s in (generate(f, split_seed("train", 20_000_000 + i))
                                                         for i in range(4) for f in ("math_reasoning", "chart"))]
        before_reward, before_acc = sampled_reward(client, prompts, "openvlthinker")
        users = Users(server.url)
        results, working = [], None
        try:
            for index in range(3):  # as the loop does: on from a kept candidate, back to the served one otherwise
                results.append(run_round(client, policy, prompts, prompts, cfg, index,
                                         target=target_for(client, cfg, working)))
                working = results[-1].working
                if results[-1].version and results[-1].decision not in ("promote", "keep"):
                    policy = served_policy(cfg, client.adapters()["promoted"])
        finally:
            users.stop()
        assert not users.failures, users.failures[:3]
        assert len(users.answered_by) >= 2, f"the users only ever saw {users.answered_by}"
        promoted = client.adapters()["promoted"]
        assert promoted is not None and any(r.promoted for r in results)
        after_reward, after_acc = sampled_reward(client, prompts, "openvlthinker")
        answer = client.chat(messages_for(prompts[0]), model="openvlthinker", temperature=0.0, max_tokens=16)
        assert answer["model"].endswith("@" + promoted)  # the improved version is the one served
        print(f"\nreward {before_reward:.3f} -> {after_reward:.3f}, accuracy {before_acc:.3f} -> {after_acc:.3f}, "
              f"served {promoted}; rounds: {[(r.version, r.decision, r.note) for r in results]}")
        assert after_reward >= before_reward + 0.05 and after_acc > before_acc
    finally:
        server.stop()
