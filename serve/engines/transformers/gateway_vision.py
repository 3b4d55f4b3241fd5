"""The vision tower on the gateway's side of an engine process: images travel as features, not pixels.

With the engine in its own process, its single thread is what limits throughput under load, while
the gateway's process has CPU to spare. Running the vision tower where the prompt is encoded (the
same `LeanVision` forward the engine would run, on the same weights) takes that work out of the
engine, and what crosses the pipe shrinks from the patch pixels (393 KB for a 128 px image) to the
merged features and DeepStack features (24 KB). The engine's lean step takes the features as they
come (`LeanStep.encode_images`).

The features are the base tower's, and they are every request's: the engines serve LoRA adapters
of the language model only (`lora_adapters.validate_adapter`, as vLLM does for Qwen-VL), so no adapter
changes the tower. Only the tower's weights are read from the checkpoint here, not the language model's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from openvlthinker.models.lean_vision import LeanVision

from ..base import EngineError
from .lora_adapters import VISION_TOWER

__all__ = ["GatewayVision"]


class GatewayVision:
    """Turns an encoded prompt's pixel_values into image_features and deepstack_features."""

    def __init__(self, lean: LeanVision):
        self.lean = lean

    @classmethod
    def load(cls, model_path: str, dtype: Any = None) -> "GatewayVision | None":
        """The tower of a Qwen3-VL folder, or None for any other model (its pixels go to the engine)."""
        from safetensors import safe_open
        from transformers import AutoConfig
        from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLVisionModel

        from openvlthinker.models import resolve_model_path

        folder = Path(resolve_model_path(model_path))
        if not folder.is_dir():  # a hub id still to be downloaded: the engine's process does the vision
            return None
        config = AutoConfig.from_pretrained(folder)
        if config.model_type != "qwen3_vl":
            return None
        files = _weight_files(folder)
        if not files:
            return None
        if isinstance(dtype, str) and dtype != "auto":
            dtype = getattr(torch, dtype)
        state: dict[str, torch.Tensor] = {}
        for file in files:
            with safe_open(str(file), framework="pt") as f:
                for key in f.keys():
                    if key.startswith(VISION_TOWER):  # the tower's parameters in a Qwen3-VL checkpoint
                        state[key[len(VISION_TOWER):]] = f.get_tensor(key)
        if not state:
            return None
        tower = Qwen3VLVisionModel._from_config(config.vision_config)
        tower.load_state_dict(state, strict=True)
        tower.to(dtype or next(iter(state.values())).dtype).eval()
        lean = LeanVision.build(tower)
        return None if lean is None else cls(lean)

    def encode(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """`encode_one`'s output with pixel_values replaced by the features the engine would compute."""
        if "pixel_values" not in inputs:
            return inputs
        pixels, grid = (torch.from_numpy(inputs[k]) for k in ("pixel_values", "image_grid_thw"))
        try:
            with torch.inference_mode():
                features, deepstack = self.lean(pixels, grid)
        except Exception as exc:  # noqa: BLE001 - images the tower cannot take are the request's fault
            raise EngineError(f"cannot encode the images: {exc}") from exc
        out = {k: v for k, v in inputs.items() if k != "pixel_values"}
        # float32 on the wire (numpy has no bfloat16); the engine casts back to its dtype, exactly.
        out["image_features"] = features.float().numpy()
        out["deepstack_features"] = (torch.stack(deepstack).float().numpy() if deepstack
                                     else np.zeros((0, *features.shape), dtype=np.float32))
        return out


def _weight_files(folder: Path) -> list[Path]:
    """The checkpoint's safetensors files: the index's shards, or the single file."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        return [folder / s for s in shards]
    single = folder / "model.safetensors"
    return [single] if single.is_file() else []
