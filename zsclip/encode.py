"""Image batches -> L2-normalised image embeddings on the model's device and precision, and the keys that say
which vectors these are (the store's variant: precision, preprocessing, draft decoding). Who runs the stages is an
engine's business (zsclip.engines)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .models import ClipModel, vector_key
from .store import variant_key

if TYPE_CHECKING:
    import torch


def encode_images(model: ClipModel, pixels: torch.Tensor) -> torch.Tensor:
    """Unit-norm float32 image embeddings [batch, dim] on the model's device."""
    import torch

    with torch.inference_mode():
        return _encode_images(model, pixels)


def _encode_images(model: ClipModel, pixels: torch.Tensor) -> torch.Tensor:
    import torch

    if model.encoder is not None:  # ONNX Runtime (zsclip.backends): CPU, fp32 or int8 weights
        return torch.nn.functional.normalize(model.encoder.encode_image(pixels).float(), dim=-1)
    if pixels.device != model.device:
        pixels = (pixels.pin_memory() if model.device.type == "cuda" else pixels).to(model.device, non_blocking=True)
    if model.channels_last:
        pixels = pixels.contiguous(memory_format=torch.channels_last)
    with model.autocast():
        features = model.model.encode_image(pixels)
    return torch.nn.functional.normalize(features.float(), dim=-1)


def draft_size(model: ClipModel) -> int:
    """Decode JPEGs to at least twice the model's input side, so its own antialiased resize still does the
    final downscale (measured: >= 99.5% top-1 agreement with exact decoding, see bench/README.md)."""
    size = model.image_size  # from the cache when the model is not built: a fully stored run never builds it
    return 2 * (max(size) if isinstance(size, tuple | list) else int(size))


def store_variant(model: ClipModel, exact: bool = False) -> str:
    """The image store's variant key for vectors this model makes with these reading options."""
    return variant_key(vector_key(model), model.preprocess_key, None if exact else draft_size(model))
