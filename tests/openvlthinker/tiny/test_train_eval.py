"""Tiny-model training and evaluation: loss goes down, eval tabulates, bad data fails clearly."""

import json
import subprocess
import sys

import pytest
import torch

from openvlthinker.evaluation import evaluate, format_table, load_eval_data, summarise, write_report
from openvlthinker.models import load
from openvlthinker.tiny.sft import collate, encode, target_text
from openvlthinker.tiny.shapeworld import FAMILIES, generate
from openvlthinker.tiny.train import TrainConfig, build_untrained, lr_at, train


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def small_config(tmp_path, **kw):
    return TrainConfig(out_dir=tmp_path / "tiny", steps=kw.pop("steps", 30), batch_size=6, lr=3e-3, warmup=5,
                       tokenizer_corpus=200, log_every=1, threads=kw.pop("threads", 1),
                       see_steps=kw.pop("see_steps", 5), see_batch=4, **kw)


def test_targets_follow_the_mode():
    math = generate("math_reasoning", 1)
    assert target_text(math, "think").startswith("<thinking>") and target_text(math, "think").endswith("</answer>")
    assert target_text(math, "direct") == f"<answer>{math.record.answer}</answer>"
    ocr = generate("ocr", 1)
    assert "<thinking>" in target_text(ocr, "think")  # short generic trace when forced to think


def test_collate_masks_prompt_and_padding(tmp_path):
    _, tok, proc = build_untrained(small_config(tmp_path))
    exs = [encode(proc, generate(f, 3), "think") for f in ("chart", "ocr")]
    batch = collate(exs, tok.pad_token_id)
    for i, e in enumerate(exs):
        labels = batch["labels"][i]
        supervised = labels[labels != -100].tolist()
        assert supervised == e.target_ids
        assert tok.decode(supervised).endswith("<|im_end|>")
    assert batch["pixel_values"].shape[0] == sum(e.pixel_values.shape[0] for e in exs)


def test_lr_schedule():
    cfg = TrainConfig(steps=100, warmup=10, lr=1.0)
    assert lr_at(0, cfg) == pytest.approx(0.1) and lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(99, cfg) == pytest.approx(0.1, abs=0.01)


def test_config_validation():
    with pytest.raises(ValueError, match="steps"):
        TrainConfig(steps=0)
    with pytest.raises(ValueError, match="unknown families"):
        TrainConfig(families=("poetry",))


@pytest.mark.slow
def test_a_few_steps_reduce_the_loss_and_save_a_loadable_folder(tmp_path):
    log = train(small_config(tmp_path, steps=40, threads=2))
    assert torch.get_num_threads() == 1  # the module's setting again after training on two
    losses = [h["loss"] for h in log["history"]]
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5
    model, processor = load(tmp_path / "tiny")
    assert (tmp_path / "tiny" / "training_log.json").is_file()
    data = load_eval_data("shapeworld:eval:1")
    assert len(data) == len(FAMILIES)
    items = evaluate(model, processor, data, batch_size=3, max_new_tokens=24, progress=False)
    summary = summarise(items)
    assert set(summary) == set(FAMILIES) | {"all"}
    assert all(0 <= row["accuracy"] <= 1 and 0 <= row["format_rate"] <= 1 for row in summary.values())
    table = format_table(summary)
    assert table.splitlines()[0].startswith("| task | n | accuracy")
    report = json.loads(write_report(tmp_path / "r.json", items, model="x").read_text())
    assert len(report["items"]) == len(FAMILIES)


def test_eval_data_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"problem": "<image> q", "problem_type": "OCR", "answer": "x", "images": ["gone.png"]}]))
    with pytest.raises(ValueError, match="file 'gone.png' not found"):
        load_eval_data(str(bad))
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG broken")
    bad.write_text(json.dumps([{"problem": "<image> q", "problem_type": "OCR", "answer": "x", "images": ["corrupt.png"]}]))
    with pytest.raises(ValueError, match="cannot read image"):
        load_eval_data(str(bad))
    bad.write_text(json.dumps([{"problem": "q", "problem_type": "haiku", "answer": "x"}]))
    with pytest.raises(ValueError, match="unknown problem_type 'haiku'"):
        load_eval_data(str(bad))
    with pytest.raises(ValueError, match="N must be >= 1"):
        load_eval_data("shapeworld:eval:0")


def test_eval_cli_reports_bad_data_without_a_traceback(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("[{")
    out = subprocess.run([sys.executable, "-m", "openvlthinker.cli", "eval", "--data", str(bad)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "invalid JSON" in out.stderr and "Traceback" not in out.stderr


def test_shuffle_images_rotates_within_each_task_and_keeps_the_questions():
    from openvlthinker.evaluation import shuffle_images

    data = load_eval_data("shapeworld:eval:3")
    shuffled = shuffle_images(data)
    assert [r for r, _ in shuffled] == [r for r, _ in data]
    for task in FAMILIES:
        before = [imgs for r, imgs in data if r.task == task]
        after = [imgs for r, imgs in shuffled if r.task == task]
        assert after == before[1:] + before[:1]
    assert shuffle_images([]) == []
