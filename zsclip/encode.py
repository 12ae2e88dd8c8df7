"""Image batches -> L2-normalised image embeddings on the model's device and precision."""

from __future__ import annotations

import sqlite3
from collections.abc import Container, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .cache import Cache
from .errors import UsageError, is_disk_full
from .images import DEFAULT_FILE_TIMEOUT, DEFAULT_MAX_PIXELS, check_limits, iter_batches
from .models import ClipModel, vector_key
from .progress import log
from .ray_engine import INSTALL, RayOptions, check_engine
from .sources import is_uri
from .store import ImageStore, variant_key

if TYPE_CHECKING:
    import torch


@dataclass
class EmbeddedBatch:
    paths: list[str]
    features: torch.Tensor | None  # [len(paths), dim], unit-norm float32
    skipped: list[tuple[str, str]] = field(default_factory=list)
    reused: int = 0  # how many vectors came from the image-embedding store
    skipped_at: list[int] = field(default_factory=list)  # per skip record: how many of `paths` precede it
    encoded: list[int] = field(default_factory=list)  # indices into paths that were decoded and encoded here
    content_hashes: list[str | None] | None = None  # per path, where the engine read the bytes (the Ray engine)


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


def embed_stream(
    model: ClipModel,
    sources: list[tuple[str, bool]],
    *,
    batch_size: int | None = None,
    workers: int | None = None,
    recursive: bool = True,
    store: bool = True,
    cache: Cache | None = None,
    exact: bool = False,
    decode_on: str = "auto",
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    file_timeout: float | None = DEFAULT_FILE_TIMEOUT,
    exclude: Container[str] = (),
    shard: tuple[int, int] | None = None,
    engine: str = "local",
    ray: RayOptions | None = None,
) -> Iterator[EmbeddedBatch]:
    """Decode and encode in batches, in walk order; what classify, eval and prompt comparison all stand on.

    With `store`, files already in the image-embedding store are not decoded or encoded again, and every newly
    encoded image is added to it. Unless `exact`, large JPEGs are decoded in draft mode (see images.load_image).
    `decode_on`: "auto" decodes JPEGs on the GPU when the model runs on CUDA (zsclip.gpu), "cpu" always uses
    PIL in worker processes, "device" forces the tensor path on the model's device (used by tests on CPU).
    Batches default to 256 images on CUDA, 32 elsewhere. Files over `max_pixels`, or taking longer than
    `file_timeout` seconds, are skipped; paths in `exclude` are left out (a resumed run has them already).
    If the disk fills up while storing, storing stops with a warning and the run goes on. `shard` (i, N) keeps
    the files of shard i only (zsclip.sources.in_shard). `engine`: "local" (this process and its decoding
    workers) or "ray" (Ray Data tasks and model actors, zsclip.ray_engine, configured by `ray`); both yield the
    same batches' records.
    """
    if check_engine(engine) == "ray":
        from .ray_engine import ray_embed_stream

        yield from ray_embed_stream(
            model, sources, batch_size=batch_size, workers=workers, recursive=recursive, store=store, cache=cache,
            exact=exact, max_pixels=max_pixels, file_timeout=file_timeout, exclude=exclude, shard=shard, ray=ray,
        )  # fmt: skip
        return
    uri = next((p for p, _ in sources if is_uri(p)), None)
    if uri is not None:
        raise UsageError(f"{uri}: object-store URIs are read by --engine ray only ({INSTALL})")
    check_limits(batch_size, workers, max_pixels, file_timeout)  # before `or`, which would take 0 as the default
    batch_size = batch_size or (256 if model.device.type == "cuda" else 32)
    draft = None if exact else draft_size(model)
    image_store = ImageStore.open(cache or Cache(), model.fingerprint, store_variant(model, exact)) if store else None
    on_device = decode_on == "device" or (decode_on == "auto" and model.device.type == "cuda")
    if on_device:
        from .gpu import TensorPreprocess, iter_device_batches  # torchvision's decoders: only on this path
    if on_device and TensorPreprocess.from_transform(model.preprocess) is not None:
        batches = iter_device_batches(
            sources, model.preprocess, model.device, batch_size=batch_size, recursive=recursive,
            store=image_store, draft=draft, max_pixels=max_pixels, file_timeout=file_timeout, exclude=exclude,
            shard=shard,
        )  # fmt: skip
    else:
        batches = iter_batches(
            sources, model.preprocess, batch_size=batch_size, workers=workers, recursive=recursive,
            store=image_store, draft=draft, max_pixels=max_pixels, file_timeout=file_timeout, exclude=exclude,
            shard=shard,
        )  # fmt: skip
    try:
        yield from _embed(model, batches, image_store)
    finally:
        if image_store is not None:
            image_store.close()


def _embed(model: ClipModel, batches, image_store: ImageStore | None) -> Iterator[EmbeddedBatch]:
    import torch

    for batch in batches:
        if not batch.paths:
            yield EmbeddedBatch([], None, batch.skipped, skipped_at=batch.skipped_at)
            continue
        rows: dict[int, torch.Tensor] = {i: torch.from_numpy(v.copy()) for i, v in batch.stored.items()}
        if batch.pixels is not None:
            encoded = encode_images(model, batch.pixels).cpu()
            rows.update(zip(batch.decoded, encoded, strict=True))
        if image_store is not None:
            fresh = [(identity, rows[i].numpy()) for i, identity in batch.identities.items()]
            image_store = image_store if _put(image_store, fresh) else None
        features = torch.stack([rows[i] for i in range(len(batch.paths))]).to(model.device)
        hashes = [batch.identities[i].content_hash if i in batch.identities else None for i in range(len(batch.paths))]
        yield EmbeddedBatch(
            batch.paths, features, batch.skipped, len(batch.stored), batch.skipped_at, list(batch.decoded), hashes
        )


def _put(store: ImageStore, rows: list) -> bool:
    """Store vectors; False (after one warning) when the disk is full, so the run goes on without storing."""
    try:
        store.put(rows)
    except (sqlite3.OperationalError, OSError) as exc:
        if is_disk_full(exc):
            why = f"the disk holding the cache ({store.db_path}) is full ({exc})"
        elif "readonly" in str(exc):  # made read-only during the run (remounted, permissions changed)
            why = f"the cache {store.db_path} cannot be written ({exc})"
        else:
            raise
        log(
            f"warning: {why}; image embeddings are no longer stored in this run, those stored so far are kept. "
            "Free space or set ZSCLIP_CACHE_DIR."
        )
        return False
    return True
