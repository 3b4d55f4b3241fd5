"""``openvlthinker.models.load``: folder round trip, HF-cache hub ids, and clear errors offline."""

import shutil
import socket

import pytest
import torch

from openvlthinker.models import DEFAULT_MODEL, ModelNotFoundError, load, resolve_model_path
from openvlthinker.tiny.build import folder_size_mb, init_tiny_model, sample_texts, save_tiny, train_tokenizer


def _logits(model, proc, image, turn):
    text = proc.apply_chat_template(turn("What is the bounding box of the red circle?"), tokenize=False,
                                    add_generation_prompt=True)
    batch = proc(text=[text], images=[image()], return_tensors="pt")
    with torch.no_grad():
        return model(**batch).logits


def test_saved_folder_reloads_with_identical_logits(tmp_path, image, turn):
    tok = train_tokenizer(sample_texts())
    model = init_tiny_model(tok, seed=3)
    folder = save_tiny(model, tok, tmp_path / "tiny")
    loaded, proc = load(folder)
    assert type(loaded).__name__ == "Qwen3VLForConditionalGeneration" and not loaded.training
    assert folder_size_mb(folder) <= 20
    assert torch.equal(_logits(model, proc, image, turn), _logits(loaded, proc, image, turn))
    assert loaded.generation_config.eos_token_id == model.generation_config.eos_token_id


def test_dtype_argument(tiny_dir):
    model, _ = load(tiny_dir, dtype="bfloat16")
    assert next(model.parameters()).dtype == torch.bfloat16


@pytest.fixture
def offline(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def test_unknown_hub_id_offline_is_a_clear_error(offline):
    with pytest.raises(ModelNotFoundError, match="not found locally.*local model folder"):
        load("openvlthinker-tests/no-such-model")


def test_unknown_hub_id_without_network_is_a_clear_error(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)

    def no_network(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(socket, "create_connection", no_network)
    with pytest.raises(ModelNotFoundError, match="cannot be reached"):
        resolve_model_path("openvlthinker-tests/no-such-model")


def test_hub_id_in_local_cache_loads_offline(offline, monkeypatch, tmp_path, tiny_dir):
    from huggingface_hub import constants

    # Lay the tiny folder out as the HF cache does: refs/main -> snapshots/<commit>/files.
    commit = "0" * 40
    repo = tmp_path / "hub" / "models--openvlthinker-tests--tiny"
    shutil.copytree(tiny_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert resolve_model_path("openvlthinker-tests/tiny") == str(repo / "snapshots" / commit)
    model, proc = load("openvlthinker-tests/tiny")
    assert type(proc).__name__ == "Qwen3VLImageOnlyProcessor"


def test_empty_directory_is_a_clear_error(tmp_path):
    with pytest.raises(ModelNotFoundError, match="not a model folder"):
        load(tmp_path)


def test_file_path_is_a_clear_error(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(ModelNotFoundError, match="not a model folder"):
        load(tmp_path / "weights.bin")


def test_missing_local_path_is_a_clear_error(tmp_path):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load(tmp_path / "nope" / "model")
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load("./relative/missing-model")


def test_default_model_points_into_the_package():
    assert DEFAULT_MODEL.replace("\\", "/").endswith("openvlthinker/weights/shapeworld-tiny")


def test_model_not_found_is_a_value_error():
    assert issubclass(ModelNotFoundError, ValueError)


def test_missing_default_model_says_how_to_get_it(monkeypatch, tmp_path):
    from openvlthinker.models import loading

    missing = str(tmp_path / "weights" / "shapeworld-tiny")  # as on a checkout without the weights
    monkeypatch.setattr(loading, "DEFAULT_MODEL", missing)
    with pytest.raises(ModelNotFoundError, match="tiny default"):
        loading.load(missing)


def test_shipped_checkpoint_loads():
    from pathlib import Path

    assert Path(DEFAULT_MODEL, "config.json").is_file(), "run `openvlthinker train-tiny` to produce it"
    model, processor = load()
    assert type(model).__name__ == "Qwen3VLForConditionalGeneration"
    assert processor.tokenizer.convert_tokens_to_ids("<|image_pad|>") == model.config.image_token_id


def test_uncached_hub_id_is_left_to_download_only_when_hub_reachable(monkeypatch):
    import contextlib

    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: contextlib.nullcontext())
    assert resolve_model_path("openvlthinker-tests/no-such-model") == "openvlthinker-tests/no-such-model"


def test_importing_the_package_stays_light():
    import subprocess
    import sys

    code = "import sys, openvlthinker.models; print(any(m in sys.modules for m in ('torch', 'transformers', 'peft')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_prompt_processor_is_the_processor_or_a_text_models_tokenizer(tmp_path):
    from openvlthinker.models import load_prompt_processor
    from openvlthinker.tiny.text_model import text_model_from_shipped

    processor = load_prompt_processor(DEFAULT_MODEL)
    assert hasattr(processor, "image_processor") and hasattr(processor, "tokenizer")
    tokenizer = load_prompt_processor(text_model_from_shipped(tmp_path / "text"))
    assert not hasattr(tokenizer, "image_processor")
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") == processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load_prompt_processor(tmp_path / "missing")
