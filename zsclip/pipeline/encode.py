"""Image batches -> L2-normalised image embeddings on the model's device and precision, and the keys that say
which vectors these are (the store's variant: precision, preprocessing, draft decoding). Who runs the stages is an
engine's business (zsclip.engines)."""

from __future__ import annotations

from typing import Any

import numpy as np

from zsclip.models import ClipModel, vector_key
from zsclip.store.embeddings import variant_key
from zsclip.zeroshot.similarity import unit


def encode_images(model: ClipModel, pixels: Any) -> np.ndarray:
    """Unit-norm float32 image embeddings [batch, dim]. `pixels` are uint8 [batch, height, width, 3] as
    Preprocess.geometry makes them (normalised here), or a float tensor already normalised
    (zsclip.pipeline.gpu_decode)."""
    if model.encoder is not None:  # ONNX Runtime (zsclip.backends): CPU, NumPy in and out, no torch
        return unit(model.encoder.encode_image(model.preprocess.normalize(pixels)))
    import torch

    with torch.inference_mode():
        return _encode_torch(model, pixels)


def _encode_torch(model: ClipModel, pixels: Any) -> np.ndarray:
    import torch

    if isinstance(pixels, np.ndarray):
        if model.device_type == "cpu":
            pixels = torch.from_numpy(model.preprocess.normalize(pixels))
        else:  # a quarter of the bytes cross to the device; normalised there with the same float32 operations
            pixels = _normalize_on(model, torch.from_numpy(pixels).pin_memory().to(model.device, non_blocking=True))
    elif pixels.device != model.device:
        pixels = (pixels.pin_memory() if model.device_type == "cuda" else pixels).to(model.device, non_blocking=True)
    if model.channels_last:
        pixels = pixels.contiguous(memory_format=torch.channels_last)
    with model.autocast():
        features = model.model.encode_image(pixels)
    return torch.nn.functional.normalize(features.float(), dim=-1).cpu().numpy()


def _normalize_on(model: ClipModel, pixels):
    """uint8 [n, h, w, 3] on the device -> normalised float32 [n, 3, h, w]: ToTensor's /255 and Normalize."""
    import torch

    mean = torch.tensor(model.preprocess.mean, dtype=torch.float32, device=pixels.device)[:, None, None]
    std = torch.tensor(model.preprocess.std, dtype=torch.float32, device=pixels.device)[:, None, None]
    return (pixels.permute(0, 3, 1, 2).float() / 255 - mean) / std


def draft_size(model: ClipModel) -> int:
    """Decode JPEGs to at least twice the model's input side, so its own antialiased resize still does the
    final downscale (measured: >= 99.5% top-1 agreement with exact decoding, see bench/README.md)."""
    size = model.image_size  # from the cache when the model is not built: a fully stored run never builds it
    return 2 * (max(size) if isinstance(size, tuple | list) else int(size))


def store_variant(model: ClipModel, exact: bool = False) -> str:
    """The image store's variant key for vectors this model makes with these reading options."""
    return variant_key(vector_key(model), model.preprocess_key, None if exact else draft_size(model))
