"""The image-only Qwen3-VL processor: placeholder expansion, save/load, hub-style fallback."""

import json
import shutil

import pytest

from openvlthinker.models import load_processor


def _pad_runs(ids, pad_id):
    """Lengths of the consecutive runs of ``pad_id`` in ``ids``."""
    runs, n = [], 0
    for i in ids + [None]:
        if i == pad_id:
            n += 1
        elif n:
            runs.append(n)
            n = 0
    return runs


@pytest.mark.parametrize("sizes", [[(128, 128)], [(128, 128), (300, 200)]])
def test_image_pads_match_grid(tiny, image, turn, sizes):
    _, proc = tiny
    text = proc.apply_chat_template(turn("Where is the circle?", len(sizes)), tokenize=False,
                                    add_generation_prompt=True)
    batch = proc(text=[text], images=[image(w, h) for w, h in sizes], return_tensors="pt")
    grid = batch["image_grid_thw"]
    assert grid.shape == (len(sizes), 3)
    expected = (grid.prod(-1) // 4).tolist()  # merge 2x2 patches per token
    pad_id = proc.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert _pad_runs(batch["input_ids"][0].tolist(), pad_id) == expected
    assert batch["pixel_values"].shape[0] == int(grid.prod(-1).sum())
    assert batch["mm_token_type_ids"].shape == batch["input_ids"].shape
    if sizes == [(128, 128)]:
        assert expected == [16]  # 128x128 -> 8x8 patches of 16 px -> 16 merged tokens


def test_large_images_are_capped(tiny, image):
    _, proc = tiny
    out = proc.image_processor(images=[image(1024, 768)], return_tensors="pt")
    assert int(out["image_grid_thw"].prod()) // 4 <= 16


def test_chat_template_with_tokenize_loads_images(tiny, image):
    _, proc = tiny
    messages = [{"role": "user", "content": [{"type": "image", "image": image()},
                                             {"type": "image", "image": image(64, 64, "blue")},
                                             {"type": "text", "text": "Compare."}]}]
    batch = proc.apply_chat_template(messages, tokenize=True, add_generation_prompt=True,
                                     return_dict=True, return_tensors="pt")
    assert batch["image_grid_thw"].tolist() == [[1, 8, 8], [1, 4, 4]]


def test_videos_are_refused(tiny):
    _, proc = tiny
    with pytest.raises(ValueError, match="images only"):
        proc(text=["x"], videos=[[0]])


def test_save_load_round_trip(tiny, image, turn, tmp_path):
    from transformers import AutoProcessor

    _, proc = tiny
    proc.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    assert saved["processor_class"] == "Qwen3VLImageOnlyProcessor"
    text = proc.apply_chat_template(turn("How many?"), tokenize=False, add_generation_prompt=True)
    before = proc(text=[text], images=[image()], return_tensors="pt")
    for again in (load_processor(tmp_path), AutoProcessor.from_pretrained(tmp_path)):
        assert type(again) is type(proc)
        assert again.chat_template == proc.chat_template
        after = again(text=[text], images=[image()], return_tensors="pt")
        assert after.keys() == before.keys()
        assert all((after[k] == before[k]).all() for k in before)


def _as_hub_checkpoint(src, dst):
    """Rewrite a tiny folder into the layout of a real Qwen3-VL hub checkpoint (stock processor)."""
    shutil.copytree(src, dst)
    image_cfg = json.loads((dst / "processor_config.json").read_text())["image_processor"]
    (dst / "processor_config.json").unlink()
    image_cfg.update(processor_class="Qwen3VLProcessor", image_processor_type="Qwen2VLImageProcessorFast")
    (dst / "preprocessor_config.json").write_text(json.dumps(image_cfg))
    template = (dst / "chat_template.jinja").read_text()
    (dst / "chat_template.jinja").unlink()
    (dst / "chat_template.json").write_text(json.dumps({"chat_template": template}))
    tok_cfg = json.loads((dst / "tokenizer_config.json").read_text())
    (dst / "tokenizer_config.json").write_text(json.dumps({**tok_cfg, "processor_class": "Qwen3VLProcessor"}))
    return dst


def test_stock_qwen3vl_layout_falls_back_to_image_only(tiny_dir, tiny, image, turn, tmp_path):
    from transformers.utils import is_torchvision_available

    if is_torchvision_available():
        pytest.skip("with torchvision the stock processor is used")
    hub = _as_hub_checkpoint(tiny_dir, tmp_path / "hub")
    proc = load_processor(hub)
    assert type(proc).__name__ == "Qwen3VLImageOnlyProcessor"
    assert type(proc.image_processor).__name__ == "Qwen2VLImageProcessorPil"
    text = proc.apply_chat_template(turn("How many?"), tokenize=False, add_generation_prompt=True)
    ref = tiny[1](text=[text], images=[image()], return_tensors="pt")
    got = proc(text=[text], images=[image()], return_tensors="pt")
    assert (got["input_ids"] == ref["input_ids"]).all() and (got["pixel_values"] == ref["pixel_values"]).all()
