"""The GPU image path: files read by CPU threads, JPEGs decoded in batches on the GPU (nvjpeg through
torchvision.io.decode_jpeg), then resized, cropped and normalised there, overlapping with the encoder.

It mirrors the model's own preprocessing (Resize -> CenterCrop -> Normalize, as open_clip builds it); a resize
mode it does not mirror takes the CPU path instead. Files that are not JPEG, or that the batch
decoder rejects, go through the CPU path one by one, with its skip rules. The same code runs on the CPU (device
"cpu"), which is how the tests cover it without a GPU.
"""

from __future__ import annotations

import io
import os
import sqlite3
import stat
import warnings
from collections import deque
from collections.abc import Container, Iterator
from dataclasses import dataclass

import torch
import torchvision.transforms.v2.functional as TF
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms import InterpolationMode

from zsclip.models.preprocess import Preprocess
from zsclip.pipeline.images import (
    DEFAULT_FILE_TIMEOUT,
    DEFAULT_MAX_PIXELS,
    Batch,
    SkipFile,
    check_limits,
    check_pixels,
    chunks,
    has_image_extension,
    in_walk_order,
    load_image,
    looks_like_image,
    open_image,
    remembered,
    time_limit,
)
from zsclip.pipeline.workers import run_tasks
from zsclip.store.embeddings import ImageStore
from zsclip.store.shards import MemberError, is_member, read_member

_JPEG = b"\xff\xd8\xff"


@dataclass(frozen=True)
class TensorPreprocess:
    """The model's Resize/CenterCrop/Normalize as tensor ops that run on any device."""

    resize: int | tuple[int, int]  # int: shorter side (aspect kept); (h, w): squash
    interpolation: InterpolationMode
    crop: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def from_preprocess(cls, preprocess: Preprocess) -> TensorPreprocess | None:
        """The model's preprocessing as tensor ops; None for a resize this path does not mirror (open_clip's
        "longest" and the non-square "shortest")."""
        h, w = preprocess.size
        if preprocess.resize_mode == "squash":
            resize: int | tuple[int, int] = (h, w)
        elif preprocess.resize_mode == "shortest" and h == w:
            resize = h
        else:
            return None
        mode = InterpolationMode.BILINEAR if preprocess.interpolation == "bilinear" else InterpolationMode.BICUBIC
        return cls(resize, mode, (h, w), preprocess.mean, preprocess.std)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 [3, H, W] on any device -> normalised float32 [3, crop_h, crop_w]."""
        x = image.float() / 255.0
        x = TF.resize(
            x,
            list(self.resize) if isinstance(self.resize, tuple) else [self.resize],
            interpolation=self.interpolation,
            antialias=True,
        )
        x = TF.center_crop(x, list(self.crop))
        return TF.normalize(x.clamp_(0, 1), list(self.mean), list(self.std))


def _read(path: str) -> bytes | None:
    """The file's bytes; None for anything but a readable regular file (a FIFO would block), which then takes
    the CPU path and its skip rules. A shard member (SHARD.tar#MEMBER) is read in place."""
    member = is_member(path)
    if member is not None:
        try:
            return read_member(*member)
        except MemberError:
            return None
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def iter_device_batches(
    sources: list[tuple[str, bool]],
    preprocess: Preprocess,
    device: torch.device,
    *,
    batch_size: int = 256,
    recursive: bool = True,
    store: ImageStore | None = None,
    draft: int | None = None,
    threads: int | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    file_timeout: float | None = DEFAULT_FILE_TIMEOUT,
    exclude: Container[str] = (),
    shard: tuple[int, int] | None = None,
) -> Iterator[Batch]:
    """Batches like images.iter_batches, with pixels decoded and preprocessed on `device`. Reads run on
    supervised threads: a file that blocks longer than `file_timeout` is skipped and its thread abandoned."""
    tensor_pp = TensorPreprocess.from_preprocess(preprocess)
    if tensor_pp is None:
        raise ValueError("preprocessing not mirrored on the device")
    check_limits(batch_size, threads, max_pixels, file_timeout)

    def prepare(chunk, failed, mark):  # on a reader thread: store lookups and file reads for one batch
        out = []
        for n, (path, explicit) in enumerate(chunk):
            mark(n)
            if not (explicit or has_image_extension(path) or looks_like_image(path)):
                continue
            vector, identity = _lookup(store, path)
            data = None if vector is not None else _read(path)
            out.append((path, vector, identity, data))
        return out, [(path, reason) for (path, _), reason in failed]

    seen: deque[list] = deque()
    reads = run_tasks(
        remembered(chunks(sources, batch_size, recursive, exclude, shard), seen),
        prepare,
        threads=True,
        workers=threads or min(16, os.cpu_count() or 4),
        item_timeout=file_timeout,
    )
    for prepared, failed in reads:
        batch = _decode(prepared, preprocess, tensor_pp, device, draft, max_pixels, file_timeout)
        batch.skipped.extend(failed)
        yield in_walk_order(batch, seen.popleft())


def _lookup(store: ImageStore | None, path: str):
    """The store's (vector, identity); as on the CPU path, a store that cannot be read costs a re-encode."""
    if store is None:
        return None, None
    try:
        return store.lookup(path)
    except sqlite3.Error:
        return None, None


def _decode(prepared, preprocess, tensor_pp: TensorPreprocess, device, draft, max_pixels, file_timeout=None) -> Batch:
    """Decode all JPEGs of the batch in one call, then build the batch in file order; anything the device
    decoder cannot read (other formats, damaged JPEGs) goes through the CPU path and its skip rules, under the
    per-file time limit (in the main thread: elsewhere nothing can interrupt it)."""
    batch = Batch()
    jpegs, oversized = [], set()
    for k, (path, vector, _, data) in enumerate(prepared):
        if vector is None and data and data.startswith(_JPEG):
            try:
                check_pixels(_jpeg_size(data), max_pixels)  # from the header, before the device allocates
            except SkipFile as exc:
                batch.skipped.append((path, str(exc)))
                oversized.add(k)
                continue
            except (OSError, ValueError, SyntaxError):
                continue  # unreadable header: the CPU path below gives the reason
            jpegs.append(k)
    data = [torch.frombuffer(bytearray(prepared[k][3]), dtype=torch.uint8) for k in jpegs]
    on_device = dict(zip(jpegs, _decode_jpegs(data, device), strict=True))
    pixels = []
    for k, (path, vector, identity, _) in enumerate(prepared):
        if k in oversized:
            continue
        index = len(batch.paths)
        if vector is not None:
            batch.stored[index] = vector
        else:
            image = on_device.get(k)
            try:
                if image is None:  # not a JPEG, or one the device decoder rejected
                    with time_limit(file_timeout):
                        image = load_image(path, preprocess.geometry, draft, max_pixels)
                    image = torch.from_numpy(preprocess.normalize(image)).to(device)
                else:
                    image = tensor_pp(image)
                pixels.append(image)
            except SkipFile as exc:
                batch.skipped.append((path, str(exc)))
                continue
            batch.decoded.append(index)
        batch.paths.append(path)
        if identity is not None:
            batch.identities[index] = identity
    batch.pixels = torch.stack(pixels) if pixels else None
    return batch


def _jpeg_size(data: bytes) -> tuple[int, int]:
    with open_image(io.BytesIO(data)) as im:  # parses the header only
        return im.size


def _decode_jpegs(data: list[torch.Tensor], device) -> list[torch.Tensor | None]:
    """Batch decode; on failure, one by one so a single bad file costs only itself."""
    if not data:
        return []
    with warnings.catch_warnings():
        # torchvision 0.29 deprecates its codecs in favour of TorchCodec; until that offers batched nvjpeg
        # decoding this is the fast path, and the warning is not something a user can act on.
        warnings.simplefilter("ignore", DeprecationWarning)
        return _decode_jpegs_now(data, device)


def _decode_jpegs_now(data: list[torch.Tensor], device) -> list[torch.Tensor | None]:
    try:
        return list(decode_jpeg(data, mode=ImageReadMode.RGB, device=device, apply_exif_orientation=True))
    except RuntimeError:
        out = []
        for d in data:
            try:
                out.append(decode_jpeg(d, mode=ImageReadMode.RGB, device=device, apply_exif_orientation=True))
            except RuntimeError:
                out.append(None)
        return out
