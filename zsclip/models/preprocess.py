"""A model's image preprocessing in PIL + NumPy, the same pixels as open_clip's eval transform, without torch.

open_clip builds its eval transform from a PreprocessCfg (size, mean, std, interpolation, resize_mode,
fill_color) with torchvision: a resize done by PIL, a centre crop (or pad), ToTensor and Normalize. Here the
same steps run in two parts, so decoding workers never import torch:

- `geometry(image)`: the resize and crop, by PIL with the sizes torchvision and open_clip compute; uint8 pixels
  [height, width, 3]. This is what crosses from a decoding process to the encoder (a quarter of float32's bytes).
- `normalize(pixels)`: ToTensor's /255 and Normalize, in float32, by a lookup table per channel that holds the
  exact values those float32 operations give (so no rounding differs); float32 [batch, 3, height, width].

tests/test_preprocess.py checks the result against open_clip's own transform for every resize mode and
interpolation open_clip has (equal to 1e-6).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)  # open_clip.constants.OPENAI_DATASET_MEAN
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
RESIZE_MODES = ("shortest", "longest", "squash")


@dataclass(frozen=True)
class Preprocess:
    """A model's eval preprocessing: PIL image -> model input (see the module docstring)."""

    size: tuple[int, int]  # (height, width) of the model input
    mean: tuple[float, float, float] = OPENAI_MEAN
    std: tuple[float, float, float] = OPENAI_STD
    interpolation: str = "bicubic"  # open_clip's "random" is a training option: bicubic at eval, as there
    resize_mode: str = "shortest"
    fill_color: int = 0

    @classmethod
    def from_cfg(cls, cfg: dict[str, Any]) -> Preprocess:
        """From open_clip's preprocessing config (`open_clip.get_model_preprocess_cfg`, or its JSON form)."""
        size = cfg.get("size", 224)
        size = (int(size), int(size)) if isinstance(size, int | float) else (int(size[0]), int(size[1]))
        mean, std = cfg.get("mean") or OPENAI_MEAN, cfg.get("std") or OPENAI_STD
        mean = (float(mean),) * 3 if isinstance(mean, int | float) else tuple(float(m) for m in mean)
        std = (float(std),) * 3 if isinstance(std, int | float) else tuple(float(s) for s in std)
        mode = cfg.get("mode", "RGB")
        if mode != "RGB":
            raise ValueError(f"preprocessing mode {mode!r}: only RGB models are supported")
        resize_mode = cfg.get("resize_mode") or "shortest"
        if resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode {resize_mode!r}: open_clip has {', '.join(RESIZE_MODES)}")
        return cls(size, mean, std, cfg.get("interpolation") or "bicubic", resize_mode, int(cfg.get("fill_color", 0)))

    # -- what is cached and keyed ------------------------------------------------------------------------------
    def to_json(self) -> dict:
        """The config in open_clip's form (what from_cfg reads)."""
        return {**asdict(self), "size": list(self.size), "mean": list(self.mean), "std": list(self.std)}

    @property
    def key(self) -> str:
        """Identifies the preprocessing in cache keys."""
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()[:16]

    @property
    def image_size(self) -> int | tuple[int, int]:
        return self.size[0] if self.size[0] == self.size[1] else self.size

    # -- the two halves ----------------------------------------------------------------------------------------
    def geometry(self, image: Image.Image) -> np.ndarray:
        """Resize and crop (or pad) as open_clip does: uint8 [height, width, 3]. `image` is RGB."""
        target = self._resized_size(image.height, image.width)
        if target != (image.height, image.width):  # torchvision leaves an image already that size alone
            image = image.resize((target[1], target[0]), self._resample(target))
        pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
        if self.resize_mode == "squash":
            return np.ascontiguousarray(pixels)
        fill = self.fill_color if self.resize_mode == "longest" else 0  # torchvision's CenterCrop pads with 0
        return np.ascontiguousarray(center_crop_or_pad(pixels, self.size, fill))

    def normalize(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 [batch, height, width, 3] (or one image [height, width, 3]) -> float32 [batch, 3, height, width]
        (or [3, height, width]): ToTensor's /255 and Normalize."""
        one = pixels.ndim == 3
        batch = pixels[None] if one else pixels
        out = np.empty((batch.shape[0], 3, batch.shape[1], batch.shape[2]), dtype=np.float32)
        table = self._table()
        for c in range(3):
            np.take(table[c], batch[..., c], out=out[:, c])
        return out[0] if one else out

    def __call__(self, image: Image.Image) -> np.ndarray:
        """One PIL image -> float32 [3, height, width], as open_clip's transform (as a NumPy array)."""
        return self.normalize(self.geometry(image))

    # -- the sizes open_clip and torchvision compute -------------------------------------------------------
    def _resized_size(self, h: int, w: int) -> tuple[int, int]:
        th, tw = self.size
        if self.resize_mode == "squash":
            return th, tw
        if self.resize_mode == "shortest" and th == tw:  # torchvision Resize(int): the short side to `th`
            short, long = (w, h) if w <= h else (h, w)
            new_short, new_long = th, int(th * long / short)
            return (new_long, new_short) if w <= h else (new_short, new_long)
        # open_clip's ResizeKeepRatio (from timm): longest=1 for "longest", 0 for a non-square "shortest"
        longest = 1.0 if self.resize_mode == "longest" else 0.0
        ratio_h, ratio_w = h / th, w / tw
        ratio = max(ratio_h, ratio_w) * longest + min(ratio_h, ratio_w) * (1.0 - longest)
        return round(h * 1.0 / ratio), round(w * 1.0 / ratio)

    def _resample(self, target: tuple[int, int]) -> int:
        if self.resize_mode == "shortest" and self.size[0] != self.size[1]:
            return Image.BICUBIC  # open_clip's ResizeKeepRatio there is built with its default interpolation
        return Image.BILINEAR if self.interpolation == "bilinear" else Image.BICUBIC

    def _table(self) -> np.ndarray:
        """[3, 256] float32: every uint8 value through (v / 255 - mean) / std, in float32 as torch computes it."""
        values = np.arange(256, dtype=np.float32) / np.float32(255)
        mean = np.asarray(self.mean, dtype=np.float32)[:, None]
        std = np.asarray(self.std, dtype=np.float32)[:, None]
        return (values[None, :] - mean) / std


def center_crop_or_pad(pixels: np.ndarray, size: Sequence[int], fill: int = 0) -> np.ndarray:
    """torchvision's center_crop (open_clip's center_crop_or_pad with `fill`) on [height, width, 3] pixels."""
    crop_h, crop_w = int(size[0]), int(size[1])
    h, w = pixels.shape[:2]
    if crop_w > w or crop_h > h:
        top, left = (crop_h - h) // 2 if crop_h > h else 0, (crop_w - w) // 2 if crop_w > w else 0
        bottom, right = (crop_h - h + 1) // 2 if crop_h > h else 0, (crop_w - w + 1) // 2 if crop_w > w else 0
        pixels = np.pad(pixels, ((top, bottom), (left, right), (0, 0)), constant_values=fill)
        h, w = pixels.shape[:2]
        if (h, w) == (crop_h, crop_w):
            return pixels
    top, left = round((h - crop_h) / 2.0), round((w - crop_w) / 2.0)
    return pixels[top : top + crop_h, left : left + crop_w]
