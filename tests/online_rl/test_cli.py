"""`openvlthinker rl` as a user runs it: rounds against a live server, its adapters folder and model taken
from the server (or refused when they disagree), resume, state keyed to its server, partial publish cleanup,
plot."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from openvlthinker.models import DEFAULT_MODEL
from openvlthinker.versions import published_versions
from serve.launcher import ServerProcess


@pytest.mark.slow
def test_rounds_resume_and_plot(tmp_path):
    adapters, out = tmp_path / "adapters", tmp_path / "rl"
    server = ServerProcess(["--model", DEFAULT_MODEL, "--run-dir", str(tmp_path / "run"), "--adapters-dir",
                            str(adapters), "--admin-key", "adm", "--threads", "1", "--log-level", "warning"],
                           log_path=tmp_path / "server.log")
    # No --adapters-dir, no --model: the loop takes both from the server (GET /v1/server).
    rl = [sys.executable, "-m", "openvlthinker.cli", "rl", "--endpoint", server.url, "--admin-key", "adm",
          "--group-size", "4", "--prompts-per-round", "6", "--gate-margin", "0.5", "--out", str(out)]
    try:
        for flag, value, says in (("--adapters-dir", tmp_path / "other", f"--adapters-dir {adapters.resolve()}"),
                                  ("--model", tmp_path, f"--model {Path(DEFAULT_MODEL).resolve()}")):
            if flag == "--adapters-dir":
                value.mkdir()
            wrong = subprocess.run([*rl, flag, str(value)], capture_output=True, text=True, timeout=300)
            assert wrong.returncode == 2 and says in wrong.stderr, wrong.stderr[-3000:]
        assert not (out / "state.json").exists()
        first = subprocess.run([*rl, "--rounds", "2"], capture_output=True, text=True, timeout=600)
        assert first.returncode == 0, first.stderr[-3000:]
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        assert [r["round"] for r in rows] == [0, 1]
        assert all("reward/math_reasoning" in r and "reward/ocr" in r and "wall_s" in r for r in rows)
        # A publisher killed mid-publish leaves a hidden folder; the next run removes it and resumes,
        # here without the OCR questions: none is rolled out, the round is still full.
        (adapters / ".tmp-policy-v0099-1-1").mkdir(parents=True)
        again = subprocess.run([*rl, "--rounds", "1", "--skip-tasks", "ocr", "--adapters-dir", str(adapters)],
                               capture_output=True, text=True, timeout=600)
        assert again.returncode == 0, again.stderr[-3000:]
        assert "removed a partial publish" in again.stdout
        last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
        assert "reward/ocr" not in last and "reward/chart" in last and last["prompts_rolled_out"] >= 6
        assert last["rollouts"] == 4 * last["prompts_rolled_out"] and last["groups_kept"] <= 6
        assert last["gate_size"] == 13 and last["decision"] in ("promote", "keep", "reject")
        state = json.loads((out / "state.json").read_text())
        assert state["next_round"] == 3 and state["server"]["adapters_dir"] == str(adapters.resolve())
        assert not (adapters / ".tmp-policy-v0099-1-1").exists()
        assert len(published_versions(adapters)) == sum(1 for r in [*rows, json.loads(
            (out / "metrics.jsonl").read_text().splitlines()[-1])] if r["version"])
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        steps = []
        for events in sorted((out / "tensorboard").glob("events.out.tfevents.*")):
            acc = EventAccumulator(str(events))
            acc.Reload()
            steps += [e.step for e in acc.Scalars("reward_mean")]
        assert sorted(steps) == [0, 1, 2]  # one TensorBoard scalar per round, across both runs
        plotted = subprocess.run([*rl, "plot"], capture_output=True, text=True, timeout=120)
        assert plotted.returncode == 0 and (out / "learning_curves.png").stat().st_size > 1000
        # The same state folder against another server (here: its record says so) is refused, not resumed.
        state["server"]["adapters_dir"] = "/another/server/adapters"
        (out / "state.json").write_text(json.dumps(state))
        other = subprocess.run([*rl, "--rounds", "1"], capture_output=True, text=True, timeout=300)
        assert other.returncode == 2 and "another server or base model" in other.stderr and "--out" in other.stderr
    finally:
        server.stop()


def test_bad_config_is_a_clear_error(tmp_path):
    cfg = tmp_path / "rl.yaml"
    cfg.write_text("group_sise: 4\n")
    out = subprocess.run([sys.executable, "-m", "openvlthinker.cli", "rl", "--config", str(cfg)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2 and "unknown RL config keys: group_sise" in out.stderr
