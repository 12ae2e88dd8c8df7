"""The local engine: the walk cut into batches in this process, decoded by supervised worker processes (or, on
CUDA, JPEGs decoded on the GPU by zsclip.pipeline.gpu_decode), encoded here, in walk order; files already in the
image-embedding
store are neither decoded nor encoded, and new vectors go into it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from zsclip.core.errors import UsageError
from zsclip.engines.base import EmbeddedBatch, ReadOptions
from zsclip.pipeline import encode
from zsclip.pipeline.images import iter_batches
from zsclip.pipeline.sources import is_uri
from zsclip.store.cache import Cache
from zsclip.store.embeddings import ImageStore

if TYPE_CHECKING:
    from zsclip.models import ClipModel

INSTALL_RAY = 'pip install "zsclip[ray]"'


class LocalEngine:
    def embed(self, model: ClipModel, sources: list[tuple[str, bool]], read: ReadOptions) -> Iterator[EmbeddedBatch]:
        uri = next((p for p, _ in sources if is_uri(p)), None)
        if uri is not None:
            raise UsageError(f"{uri}: object-store URIs are read by --engine ray only ({INSTALL_RAY})")
        batch_size = read.batch_size or (256 if model.device_type == "cuda" else 32)
        draft = None if read.exact else encode.draft_size(model)
        store = (
            ImageStore.open(read.cache or Cache(), model.fingerprint, encode.store_variant(model, read.exact))
            if read.store
            else None
        )
        options = dict(
            batch_size=batch_size,
            recursive=read.recursive,
            store=store,
            draft=draft,
            max_pixels=read.max_pixels,
            file_timeout=read.file_timeout,
            exclude=read.exclude,
            shard=read.shard,
        )
        try:
            yield from _embed(model, _batches(model, sources, read, options), store)
        finally:
            if store is not None:
                store.close()


def _batches(model: ClipModel, sources: list[tuple[str, bool]], read: ReadOptions, options: dict):
    """Decoded batches: on the GPU where the model runs on CUDA and its preprocessing has a tensor form, else by
    PIL in worker processes."""
    on_device = read.decode_on == "device" or (read.decode_on == "auto" and model.device_type == "cuda")
    if on_device:
        from zsclip.pipeline.gpu_decode import (  # torchvision's decoders: only on this path
            TensorPreprocess,
            iter_device_batches,
        )

        if TensorPreprocess.from_preprocess(model.preprocess) is not None:
            return iter_device_batches(sources, model.preprocess, model.device, **options)
    return iter_batches(sources, model.preprocess.geometry, workers=read.workers, **options)


def _embed(model: ClipModel, batches, store: ImageStore | None) -> Iterator[EmbeddedBatch]:
    for batch in batches:
        if not batch.paths:
            yield EmbeddedBatch([], None, batch.skipped, skipped_at=batch.skipped_at)
            continue
        rows: dict[int, np.ndarray] = dict(batch.stored)
        if batch.pixels is not None:
            rows.update(zip(batch.decoded, encode.encode_images(model, batch.pixels), strict=True))
        if store is not None:
            fresh = [(identity, rows[i]) for i, identity in batch.identities.items()]
            store = store if store.try_put(fresh) else None
        features = np.stack([rows[i] for i in range(len(batch.paths))]).astype(np.float32, copy=False)
        hashes = [batch.identities[i].content_hash if i in batch.identities else None for i in range(len(batch.paths))]
        yield EmbeddedBatch(
            batch.paths, features, batch.skipped, len(batch.stored), batch.skipped_at, list(batch.decoded), hashes
        )
