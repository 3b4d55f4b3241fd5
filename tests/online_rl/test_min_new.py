"""A round started by users' traffic: `openvlthinker rl --min-new N` waits until N graded chats have come in
through the official openai client, starts a round by itself, and keeps the questions a round has no room
for until the next (none is lost to the harvest cursor)."""

import json
import subprocess
import sys
import time

import pytest
from openai import OpenAI

from online_rl.client import GatewayClient, image_part
from openvlthinker.models import DEFAULT_MODEL
from openvlthinker.tiny.shapeworld import generate, split_seed
from serve.launcher import ServerProcess


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"the loop exited ({proc.returncode}) before {what}")
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_users_graded_chats_start_a_round_and_leftovers_wait(tmp_path):
    server = ServerProcess(["--model", DEFAULT_MODEL, "--run-dir", str(tmp_path / "run"), "--admin-key", "adm",
                            "--threads", "1", "--log-level", "warning"], log_path=tmp_path / "server.log")
    out, log_path = tmp_path / "rl", tmp_path / "rl.log"
    rl = [sys.executable, "-m", "openvlthinker.cli", "rl", "--endpoint", server.url, "--admin-key", "adm",
          "--min-new", "3", "--rounds", "2", "--poll-s", "0.5", "--group-size", "2", "--prompts-per-round", "2",
          "--max-refills", "0", "--gate-margin", "0.8", "--out", str(out)]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(rl, stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: "waiting for 3 new graded interactions" in log_path.read_text(), 300, "the loop to wait", proc)
        assert not (out / "metrics.jsonl").exists()  # nothing has come in: no round yet
        users = OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0, timeout=120)
        answers = []
        for i in range(5):  # more than a round has room for
            sample = generate("chart", split_seed("train", 40_000_000 + i))
            question = sample.record.problem.replace("<image>", "").strip()
            users.chat.completions.create(
                model="openvlthinker", max_tokens=16,
                messages=[{"role": "user", "content": [image_part(sample.image), {"type": "text", "text": question}]}],
                metadata={"problem_type": sample.record.problem_type, "reference_answer": sample.record.answer,
                          "task_type": "chart"})
            answers.append(sample.record.answer)
        assert proc.wait(timeout=900) == 0, log_path.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        try:
            rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
            state = json.loads((out / "state.json").read_text())
            client = GatewayClient(server.url, "none", "adm")
            rollouts = [i for i in client.interactions(limit=1000).data
                        if i.metadata.get("source") == "rl-rollout" and i.choice_index == 0]
        finally:
            server.stop()
    # The first round started by itself once three graded chats were in, and took two (its room);
    # the second found the three left waiting and took two of them; the last one still waits.
    assert [r["round"] for r in rows] == [0, 1]
    assert [r["user_prompts"] for r in rows] == [2.0, 2.0] and rows[-1]["pending_prompts"] == 1.0
    assert len(state["pending"]) == 1 and state["pending"][0]["answer"] == answers[-1]
    assert all(r["rollouts"] == 4 for r in rows)
    assert all("gate_p_better" in r and "version_kl" in r and "gate_answers_changed" in r for r in rows if r["version"])
    # The rollouts were the users' questions, graded against their reference answers.
    assert sorted(r.metadata["reference_answer"] for r in rollouts) == sorted(answers[:4])
