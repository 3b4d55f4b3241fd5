"""The parts of the learning diagnostics that decide what they report: the math error anatomy of
bench/headroom.py, the adapter targets of bench/vision_lora.py's two arms, the budgets and trained
weights of bench/supervised_bound.py, and the benches' --set."""

import argparse
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from online_rl.config import cli_setting
from openvlthinker.models import DEFAULT_MODEL, load

REPO = Path(__file__).resolve().parents[2]


def _bench(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    saved = list(sys.path)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = saved  # the scripts drop bench/ from sys.path as they load
    return module


@pytest.fixture(scope="module")
def headroom():
    return _bench("headroom")


@pytest.fixture(scope="module")
def vision_lora():
    return _bench("vision_lora")


@pytest.mark.parametrize("thinking, answer, expected", [
    ("There are 3 objects. 1 is red. 3 - 1 = 2.", "2", True),  # wrong count, right arithmetic: perception
    ("I count 2 circles and 1 square. 2 + 1 = 3.", " 3 ", True),
    ("There are 4 objects. 1 is red. 4 - 1 = 2.", "2", False),  # the arithmetic is wrong
    ("There are 4 objects. 1 is red. 4 - 1 = 3.", "4", False),  # the answer does not follow the trace
    ("I count -1 circles and 2 squares. -1 + 2 = 1.", "1", True),
    ("Four objects, one red.", "3", None),
])
def test_math_errors_are_told_apart_by_their_trace(headroom, thinking, answer, expected):
    assert headroom.perception_error(thinking, answer) is expected


def _wrapped(model) -> set[str]:
    return {name.rsplit(".base_layer", 1)[0] for name, _ in model.named_modules() if name.endswith(".base_layer")}


def test_the_vision_arm_adapts_the_whole_vision_tower_and_the_language_arm_none_of_it(vision_lora):
    from peft import LoraConfig, get_peft_model

    base, _ = load(DEFAULT_MODEL)
    vision = {name for name, mod in base.named_modules() if isinstance(mod, torch.nn.Linear) and ".visual." in f".{name}"}
    language = {name for name, mod in base.named_modules() if isinstance(mod, torch.nn.Linear)
                and ".language_model." in name}
    assert len(vision) == 14  # 2 blocks x 4, the merger's 2 and the 2 deepstack mergers' 2 each
    vision.add("model.visual.patch_embed.proj")  # the patch embedding (a Conv3d) is named "proj" too
    for arm, expected in (("language", language), ("vision", language | vision)):
        model, _ = load(DEFAULT_MODEL)
        peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=vision_lora.ARMS[arm]))
        got = {name.split("base_model.model.", 1)[1] for name in _wrapped(peft)}
        assert got == expected, arm


@pytest.mark.parametrize("text, expected", [
    ("lr=1e-3", ("lr", 1e-3)),  # YAML 1.1 alone would read this as a string
    ("updates_per_round=1", ("updates_per_round", 1)),
    (" skip_tasks =[ocr, chart]", ("skip_tasks", ["ocr", "chart"])),
    ("dual_clip=null", ("dual_clip", None)),
])
def test_bench_settings_are_read_as_numbers_then_yaml(text, expected):
    assert cli_setting(text) == expected


@pytest.mark.parametrize("text", ["lr", "=3", ""])
def test_a_setting_without_key_and_value_is_refused_naming_the_form(text):
    with pytest.raises(argparse.ArgumentTypeError, match="KEY=VALUE"):
        cli_setting(text)


@pytest.fixture(scope="module")
def supervised_bound():
    return _bench("supervised_bound")


def test_the_supervised_bound_scores_after_each_budget_of_whole_batches(supervised_bound):
    assert supervised_bound.budgets("480,1920", 24) == [20, 80]
    for bad in ("480,240", "100", "480,480", ""):
        with pytest.raises(ValueError, match="multiple of the batch size 24"):
            supervised_bound.budgets(bad, 24)


def test_the_supervised_bound_trains_fresh_questions_with_the_loops_adapter_or_the_recipes_weights(supervised_bound,
                                                                                                 vision_lora):
    from openvlthinker.tiny.train import TrainConfig

    cfg = TrainConfig()
    first_seed = supervised_bound.FIRST_STEP * cfg.batch_size // len(cfg.families)
    assert first_seed > cfg.steps * cfg.batch_size  # past every question the recipe trained on
    last_seed = (supervised_bound.FIRST_STEP + 40 * supervised_bound.SEED_STEPS) * cfg.batch_size // len(cfg.families)
    assert last_seed < vision_lora.TRAIN_OFFSET  # every --seed stays below bench/vision_lora.py's train questions
    model, _, optim = supervised_bound.trainable("lora", cfg)
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained and all("lora_" in n for n in trained)
    assert sum(len(g["params"]) for g in optim.param_groups) == len(trained)
    model, _, optim = supervised_bound.trainable("full", cfg)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and all(".visual." in f".{n}" and "deepstack" not in n for n in frozen)  # the recipe's frozen tower
