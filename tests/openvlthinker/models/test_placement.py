"""openvlthinker.models.placement and load's causal-LM branch: names checked with the bad value named, auto
resolved per device, CUDA asked for where there is none refused, a text-only folder loaded as a causal LM."""

import pytest
import torch

from openvlthinker.models import check_placement, is_vision_language, load, resolve_device, resolve_dtype

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")


@pytest.mark.parametrize("device, dtype, checkpointing, says", [
    ("gpu", "auto", None, "device must be auto, cpu, cuda or cuda:N, got 'gpu'"),
    ("cuda:x", "auto", None, "got 'cuda:x'"), ("CPU", "auto", None, "got 'CPU'"), (0, "auto", None, "got 0"),
    ("cpu", "fp16", None, "dtype must be one of auto, float32, bfloat16, got 'fp16'"),
    ("cpu", "float16", None, "got 'float16'"),
    ("cpu", "auto", "yes", "grad_checkpointing must be true, false or unset \\(auto\\), got 'yes'"),
])
def test_bad_names_are_refused_naming_the_value(device, dtype, checkpointing, says):
    with pytest.raises(ValueError, match=says):
        check_placement(device, dtype, checkpointing)


def test_good_names_pass_and_auto_resolves_per_device():
    for device in ("auto", "cpu", "cuda", "cuda:1"):
        check_placement(device, "auto", True)
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_dtype("auto", "cpu") == torch.float32 and resolve_dtype("auto", "cuda:0") == torch.bfloat16
    assert resolve_dtype("bfloat16", "cpu") == torch.bfloat16 and resolve_dtype("float32", "cuda") == torch.float32
    with pytest.raises(ValueError, match="got 'half'"):
        resolve_dtype("half", "cpu")


@NO_CUDA
@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_cuda_without_cuda_is_a_clear_error(name):
    with pytest.raises(ValueError, match=f"device '{name}' needs CUDA, but torch .* sees no CUDA device"):
        resolve_device(name)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_cuda_index_past_the_devices_is_a_clear_error():
    count = torch.cuda.device_count()
    assert resolve_device("cuda") == torch.device("cuda", 0)
    with pytest.raises(ValueError, match=f"'cuda:{count}' does not exist: torch sees {count} CUDA device"):
        resolve_device(f"cuda:{count}")


def test_a_text_only_folder_loads_as_a_causal_lm(tmp_path, tiny_dir):
    from openvlthinker.tiny.text_model import build_text_model

    folder = build_text_model(tmp_path / "text")
    model, tokenizer = load(folder, dtype=torch.bfloat16)
    assert type(model).__name__ == "Qwen3ForCausalLM" and not model.training
    assert next(model.parameters()).dtype == torch.bfloat16 and not hasattr(tokenizer, "image_processor")
    assert tokenizer.pad_token_id is not None
    assert not is_vision_language(folder) and is_vision_language(tiny_dir)
