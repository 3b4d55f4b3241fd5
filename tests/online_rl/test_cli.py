"""`openvlthinker rl` as a user runs it: rounds against a live server, resume, partial publish cleanup, plot."""

import json
import subprocess
import sys

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
    rl = [sys.executable, "-m", "openvlthinker.cli", "rl", "--endpoint", server.url, "--admin-key", "adm",
          "--adapters-dir", str(adapters), "--group-size", "4", "--prompts-per-round", "6", "--out", str(out)]
    try:
        first = subprocess.run([*rl, "--rounds", "2"], capture_output=True, text=True, timeout=600)
        assert first.returncode == 0, first.stderr[-3000:]
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        assert [r["round"] for r in rows] == [0, 1]
        assert all("reward/math_reasoning" in r and "reward/ocr" in r and "wall_s" in r for r in rows)
        # A publisher killed mid-publish leaves a hidden folder; the next run removes it and resumes,
        # here without the OCR questions: none is rolled out, the round is still full.
        (adapters / ".tmp-policy-v0099-1-1").mkdir(parents=True)
        again = subprocess.run([*rl, "--rounds", "1", "--skip-tasks", "ocr"], capture_output=True, text=True,
                               timeout=600)
        assert again.returncode == 0, again.stderr[-3000:]
        assert "removed a partial publish" in again.stdout
        last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
        assert "reward/ocr" not in last and "reward/chart" in last and last["rollouts"] == 6 * 4
        assert json.loads((out / "state.json").read_text())["next_round"] == 3
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
    finally:
        server.stop()


def test_bad_config_is_a_clear_error(tmp_path):
    cfg = tmp_path / "rl.yaml"
    cfg.write_text("group_sise: 4\n")
    out = subprocess.run([sys.executable, "-m", "openvlthinker.cli", "rl", "--config", str(cfg)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2 and "unknown RL config keys: group_sise" in out.stderr
