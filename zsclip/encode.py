"""Image batches -> L2-normalised image embeddings on the model's device and precision."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from .images import iter_batches
from .models import ClipModel


@dataclass
class EmbeddedBatch:
    paths: list[str]
    features: torch.Tensor | None  # [len(paths), dim], unit-norm float32
    skipped: list[tuple[str, str]] = field(default_factory=list)


@torch.inference_mode()
def encode_images(model: ClipModel, pixels: torch.Tensor) -> torch.Tensor:
    """Unit-norm float32 image embeddings [batch, dim] on the model's device."""
    pixels = pixels.to(model.device, non_blocking=True)
    with model.autocast():
        features = model.model.encode_image(pixels)
    return torch.nn.functional.normalize(features.float(), dim=-1)


def embed_stream(
    model: ClipModel,
    sources: list[tuple[str, bool]],
    *,
    batch_size: int = 32,
    workers: int | None = None,
    recursive: bool = True,
) -> Iterator[EmbeddedBatch]:
    """Decode and encode in batches, in walk order; what classify, eval and prompt comparison all stand on."""
    for batch in iter_batches(sources, model.preprocess, batch_size=batch_size, workers=workers, recursive=recursive):
        features = encode_images(model, batch.pixels) if batch.pixels is not None else None
        yield EmbeddedBatch(batch.paths, features, batch.skipped)
