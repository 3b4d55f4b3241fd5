"""Qwen-VL image preprocessing in a few numpy operations: the HF image processor's output, bit for bit.

The gateway preprocesses every request's images on its event loop. Through the processor that
is 1.5 ms per 128 px image, most of it generic machinery (keyword merging, format inference,
validation, float64 round trips) around four steps: resize to the patch grid (PIL, bicubic),
rescale and normalise, cut into patches. Here those steps run directly: the resize is the same
PIL call, and since the pixels are bytes, rescaling and normalising is a lookup in a 256-entry
table per channel that holds exactly the float32 values the processor's arithmetic produces.
`QwenPixels.of` takes only the Qwen2-VL image processor family (Qwen2/2.5/3-VL) with the
settings it reproduces; for any other processor it returns None and callers keep the processor.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["QwenPixels"]

_FAMILY = {"Qwen2VLImageProcessor", "Qwen2VLImageProcessorPil", "Qwen2VLImageProcessorFast"}


class QwenPixels:
    """pixel_values and image_grid_thw for a list of PIL images, as a Qwen2-VL image processor makes them."""

    def __init__(self, *, patch: int, merge: int, temporal: int, min_pixels: int, max_pixels: int, resample: int,
                 scale: float, mean: list[float], std: list[float]):
        self.patch, self.merge, self.temporal = patch, merge, temporal
        self.min_pixels, self.max_pixels, self.resample = min_pixels, max_pixels, resample
        self.table = _normalise_table(scale, mean, std)

    @classmethod
    def of(cls, processor: Any) -> "QwenPixels | None":
        """For a Qwen2-VL-family image processor with the standard steps on; None for any other."""
        image_processor = getattr(processor, "image_processor", processor)
        if type(image_processor).__name__ not in _FAMILY:
            return None
        flags = [getattr(image_processor, k, None) for k in ("do_resize", "do_rescale", "do_normalize", "do_convert_rgb")]
        size = getattr(image_processor, "size", None) or {}
        if flags != [True] * 4 or not (_get(size, "shortest_edge") and _get(size, "longest_edge")):
            return None
        mean, std = image_processor.image_mean, image_processor.image_std
        if not (isinstance(mean, (list, tuple)) and isinstance(std, (list, tuple)) and len(mean) == len(std) == 3):
            return None
        return cls(patch=image_processor.patch_size, merge=image_processor.merge_size,
                   temporal=image_processor.temporal_patch_size, min_pixels=_get(size, "shortest_edge"),
                   max_pixels=_get(size, "longest_edge"), resample=int(image_processor.resample),
                   scale=image_processor.rescale_factor, mean=list(mean), std=list(std))

    def grid(self, height: int, width: int) -> tuple[int, int]:
        """The patch grid (rows, columns) of an image of this size; ValueError for an aspect ratio the
        processor refuses."""
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

        h, w = smart_resize(height, width, factor=self.patch * self.merge, min_pixels=self.min_pixels,
                            max_pixels=self.max_pixels)
        return h // self.patch, w // self.patch

    def tokens(self, height: int, width: int) -> int:
        """How many placeholder tokens an image of this size takes in the prompt (merged patches)."""
        rows, cols = self.grid(height, width)
        return rows * cols // (self.merge * self.merge)

    def __call__(self, images: list[Any]) -> tuple[np.ndarray, np.ndarray]:
        """(pixel_values (patches, C * T * P * P) float32, image_grid_thw (images, 3) int64)."""
        patches, grids = [], []
        for image in images:
            rows, cols = self.grid(image.height, image.width)
            pixels = _rgb(image)
            size = (cols * self.patch, rows * self.patch)
            if (pixels.shape[1], pixels.shape[0]) != size:
                from PIL import Image

                pixels = np.asarray(Image.fromarray(pixels).resize(size, resample=self.resample))
            values = np.empty((3, *pixels.shape[:2]), dtype=np.float32)  # (C, H, W): the processor's values
            for channel in range(3):
                np.take(self.table[channel], pixels[:, :, channel], out=values[channel])
            patches.append(self._patchify(values, rows, cols))
            grids.append((1, rows, cols))
        return np.concatenate(patches), np.array(grids, dtype=np.int64)

    def _patchify(self, image: np.ndarray, rows: int, cols: int) -> np.ndarray:
        """(C, H, W) -> (rows * cols, C * T * P * P), patches ordered by merge window, as the processor does."""
        p, m, c = self.patch, self.merge, image.shape[0]
        blocks = image.reshape(c, rows // m, m, p, cols // m, m, p).transpose(1, 4, 2, 5, 0, 3, 6)
        frames = np.broadcast_to(blocks[:, :, :, :, :, None], (*blocks.shape[:5], self.temporal, p, p))
        return frames.reshape(rows * cols, c * self.temporal * p * p)


def _get(size: Any, key: str) -> Any:
    return size.get(key) if isinstance(size, dict) else getattr(size, key, None)


def _normalise_table(scale: float, mean: list[float], std: list[float]) -> np.ndarray:
    """(3, 256) float32: byte value v of channel c as the processor turns it into a float, with its
    operations in its order and dtypes (v * scale in float64, cast to float32, then (x - mean) / std)."""
    values = (np.arange(256, dtype=np.float64) * scale).astype(np.float32)
    m, s = np.array(mean, dtype=np.float32)[:, None], np.array(std, dtype=np.float32)[:, None]
    return (values[None, :] - m) / s


def _rgb(image: Any) -> np.ndarray:
    """(H, W, 3) uint8 pixels; other modes converted as the processor converts them (alpha onto white)."""
    if image.mode == "RGB":
        return np.asarray(image)
    from transformers.image_transforms import convert_to_rgb

    return np.asarray(convert_to_rgb(image, return_numpy=True), dtype=np.uint8)
