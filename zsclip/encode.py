"""Image batches -> L2-normalised image embeddings on the model's device and precision."""

from __future__ import annotations

import torch

from .models import ClipModel


@torch.inference_mode()
def encode_images(model: ClipModel, pixels: torch.Tensor) -> torch.Tensor:
    """Unit-norm float32 image embeddings [batch, dim] on the model's device."""
    pixels = pixels.to(model.device, non_blocking=True)
    with model.autocast():
        features = model.model.encode_image(pixels)
    return torch.nn.functional.normalize(features.float(), dim=-1)
