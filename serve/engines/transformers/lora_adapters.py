"""LoRA adapter versions on one base model: validate a PEFT folder, load it, unload it.

A folder is checked completely before PEFT sees it (PEFT injects layers before it loads the
weights, so a failure half way would leave a broken version behind): the files exist, the
config is a plain LoRA, every tensor belongs to a linear layer of this base model with the
right shape, and every value is finite. Versions are loaded under internal PEFT names
(`v0`, `v1`, ...) because PEFT names become module keys, which may not contain dots; the
public version names are free-form. Mixed batches use PEFT's `adapter_names=` per row, with
"__base__" for rows on the base model.

Only call `AdapterSet.load` / `unload` from the thread that runs the engine core
(`core.EngineCore`), between batches.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from ..base import EngineError

__all__ = ["BASE", "AdapterSet", "linear_shapes", "validate_adapter"]

BASE = "__base__"  # PEFT's name for "no adapter" in a mixed batch
# The vision tower's modules (and checkpoint keys) in a Qwen3-VL model. Adapters reach the language model
# only: the gateway computes image features with the base tower (gateway_vision.py, which reads the
# tower's weights under this prefix), and vLLM's LoRA for Qwen-VL models covers the language model alone too.
VISION_TOWER = "model.visual."
_KEY = re.compile(r"^base_model\.model\.(?P<module>.+)\.lora_(?P<ab>[AB])\.weight$")


def linear_shapes(model: torch.nn.Module) -> dict[str, tuple[int, int]]:
    """(in_features, out_features) of every nn.Linear of the (unwrapped) base model, by module name."""
    return {name: (m.in_features, m.out_features) for name, m in model.named_modules()
            if isinstance(m, torch.nn.Linear)}


def _check_config(folder: Path, shapes: dict[str, tuple[int, int]]) -> dict[str, Any]:
    """Parse adapter_config.json and check it describes a plain LoRA for this model."""
    try:
        config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EngineError(f"adapter {folder}: unreadable adapter_config.json ({exc})") from exc
    if config.get("peft_type") != "LORA":
        raise EngineError(f"adapter {folder}: peft_type is {config.get('peft_type')!r}, only LORA is supported")
    # PEFT's mixed-batch inference supports neither DoRA nor extra trained modules.
    for flag in ("use_dora", "modules_to_save", "target_parameters", "trainable_token_indices"):
        if config.get(flag):
            raise EngineError(f"adapter {folder}: {flag} is not supported by the serving engine")
    targets = config.get("target_modules")
    names = list(shapes)
    if isinstance(targets, str):
        matched = any(re.fullmatch(targets, n) for n in names)
        missing = [] if matched else [targets]
    else:
        missing = [t for t in targets or [] if not any(n == t or n.endswith("." + t) for n in names)]
    if not targets or missing:
        raise EngineError(f"adapter {folder} is not a LoRA for this base model: target modules {missing or targets} "
                          "do not exist in it")
    return config


def validate_adapter(path: str | Path, shapes: dict[str, tuple[int, int]]) -> dict[str, Any]:
    """Check a PEFT LoRA folder against the base model's linear layers; EngineError naming the problem."""
    from safetensors import safe_open

    folder = Path(path)
    if not folder.is_dir():
        raise EngineError(f"adapter folder {folder} does not exist")
    for required in ("adapter_config.json", "adapter_model.safetensors"):
        if not (folder / required).is_file():
            raise EngineError(f"adapter folder {folder} has no {required}")
    config = _check_config(folder, shapes)
    ranks: dict[str, dict[str, int]] = {}
    try:
        with safe_open(str(folder / "adapter_model.safetensors"), framework="pt") as f:
            for key in f.keys():
                m = _KEY.match(key)
                if m is None:
                    raise EngineError(f"adapter {folder}: unexpected tensor {key!r} (only LoRA A/B weights are served)")
                module, ab = m["module"], m["ab"]
                if module not in shapes:
                    raise EngineError(f"adapter {folder} is not a LoRA for this base model: no linear layer {module!r}")
                if module.startswith(VISION_TOWER):
                    raise EngineError(f"adapter {folder}: {module} is in the vision tower; the serving engines apply "
                                      "LoRA to the language model only (as vLLM does for Qwen-VL models)")
                tensor = f.get_tensor(key)
                n_in, n_out = shapes[module]
                ok = tensor.ndim == 2 and (tensor.shape[1] == n_in if ab == "A" else tensor.shape[0] == n_out)
                if not ok:
                    raise EngineError(f"adapter {folder}: {key} has shape {tuple(tensor.shape)}, which does not fit "
                                      f"{module} (in {n_in}, out {n_out})")
                if not torch.isfinite(tensor).all():
                    raise EngineError(f"adapter {folder}: {key} in adapter_model.safetensors contains NaN or infinite "
                                      "values")
                ranks.setdefault(module, {})[ab] = tensor.shape[0] if ab == "A" else tensor.shape[1]
    except EngineError:
        raise
    except Exception as exc:  # noqa: BLE001 - a truncated or foreign file is a bad adapter, not an engine fault
        raise EngineError(f"adapter {folder}: cannot read adapter_model.safetensors ({exc})") from exc
    if not ranks:
        raise EngineError(f"adapter {folder}: adapter_model.safetensors holds no LoRA weights")
    for module, r in ranks.items():
        if set(r) != {"A", "B"} or r["A"] != r["B"]:
            raise EngineError(f"adapter {folder}: {module} needs lora_A and lora_B of one rank, got {r}")
    return config


class AdapterSet:
    """The served model with its LoRA versions (a PeftModel once the first version is loaded)."""

    def __init__(self, model: torch.nn.Module):
        self.model = model  # what generate() runs on: the base model or the PeftModel around it
        self.shapes = linear_shapes(model)
        self.internal: dict[str, str] = {}  # public version name -> PEFT adapter name
        self._count = 0

    def load(self, name: str, path: str | Path) -> None:
        """Validate and load a version under a new name (EngineError if taken or invalid)."""
        if name in self.internal or name == BASE:
            raise EngineError(f"adapter name {name!r} is already in use; load each version under a new name")
        validate_adapter(path, self.shapes)
        peft_name = f"v{self._count}"
        self._count += 1
        from peft import PeftModel

        try:
            if isinstance(self.model, PeftModel):
                self.model.load_adapter(str(path), adapter_name=peft_name, is_trainable=False)
            else:
                self.model = PeftModel.from_pretrained(self.model, str(path), adapter_name=peft_name, is_trainable=False)
            self.model.eval()
        except Exception as exc:  # noqa: BLE001 - report any PEFT failure as a bad adapter
            self._drop(peft_name)
            raise EngineError(f"adapter {path}: PEFT could not load it ({exc})") from exc
        self.internal[name] = peft_name

    def unload(self, name: str) -> None:
        """Delete a version; the last one gone, the base model is unwrapped again."""
        if name not in self.internal:
            raise EngineError(f"adapter {name!r} is not loaded")
        self._drop(self.internal.pop(name))

    def _drop(self, peft_name: str) -> None:
        from peft import PeftModel

        if not isinstance(self.model, PeftModel) or peft_name not in self.model.peft_config:
            return
        if len(self.model.peft_config) == 1:
            # PEFT cannot run with zero adapters; unload() restores the plain base layers.
            self.model = self.model.unload()
        else:
            with warnings.catch_warnings():  # "was active, now deleted": expected, rows name adapters explicitly
                warnings.simplefilter("ignore", UserWarning)
                self.model.delete_adapter(peft_name)

    def adapter_names(self, names: list[str | None]) -> list[str] | None:
        """PEFT adapter_names for a batch (None when no version is loaded); EngineError if one is gone."""
        if not self.internal:
            if any(n is not None for n in names):
                raise EngineError(f"adapter {next(n for n in names if n is not None)!r} is not loaded")
            return None
        missing = [n for n in names if n is not None and n not in self.internal]
        if missing:
            raise EngineError(f"adapter {missing[0]!r} is not loaded")
        return [BASE if n is None else self.internal[n] for n in names]
