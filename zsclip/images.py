"""Paths -> image files -> decoded, preprocessed batches. Bad files become skip records, never exceptions.

Inputs are image files, folders (walked in sorted order, recursively by default, hidden entries skipped, symlinks
followed without loops) and `@list.txt` files of paths. Inside folders a file counts as an image by its extension
or, lacking one, by its magic bytes; anything else is ignored silently. The main process walks and cuts batches;
decoding runs in supervised worker processes (zsclip.workers), and batches stream out in walk order.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import re
import signal
import sqlite3
import stat
import threading
import warnings
from collections import deque
from collections.abc import Callable, Container, Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import IO

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .limits import DEFAULT_FILE_TIMEOUT, DEFAULT_MAX_PIXELS, check_limits
from .shards import MemberError, describe, is_member, read_member
from .sources import has_image_extension, looks_like_image, walk
from .store import FileIdentity, ImageStore
from .workers import in_worker_process, run_tasks

_HEIF = (".heic", ".heif")
try:  # phone photos: HEIC/HEIF decode only with this optional plugin
    from pillow_heif import register_heif_opener

    register_heif_opener()
    HEIF_PLUGIN = True
except ImportError:
    HEIF_PLUGIN = False


class CrossProcess:
    """A result that crosses from a worker process to the parent: tensors in shared memory go as a file
    descriptor (torch's reduction), others as bytes through the pipe, so a full /dev/shm (64 MB in a default
    Docker container) costs speed, never the run."""

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        piped = [k for k, v in state.items() if isinstance(v, torch.Tensor) and not v.is_shared()]
        state.update({k: state[k].numpy() for k in piped}, _piped=piped)
        return state

    def __setstate__(self, state: dict) -> None:
        for k in state.pop("_piped"):
            state[k] = torch.from_numpy(state[k])
        self.__dict__.update(state)


def stack(tensors: list[torch.Tensor]) -> torch.Tensor:
    """torch.stack; inside a worker process into shared memory, so the parent maps the batch, not copies it."""
    out = torch.empty((len(tensors), *tensors[0].shape), dtype=tensors[0].dtype)
    if in_worker_process():
        _share_memory(out)
    return torch.stack(tensors, out=out)


_SHM_ENTRY = re.compile(r"<(/torch_(\d+)_[^>/]*)>")
_SHARING = [True]  # False once this process found it cannot clean up after a failed share_memory_


def _share_memory(tensor: torch.Tensor) -> None:
    """Move `tensor` to shared memory if there is room (/dev/shm is 64 MB in a default Docker container); if not,
    CrossProcess pipes it as bytes. A failure leaves the /dev/shm entry torch had created before sizing it, one
    per batch: remove it, and where its name cannot be found in the error, stop trying in this process."""
    if not _SHARING[0]:
        return
    try:
        tensor.share_memory_()
    except RuntimeError as exc:
        _SHARING[0] = _remove_shm_entry(str(exc))


def _remove_shm_entry(message: str) -> bool:
    """Unlink the entry named in torch's error ("unable to ... file </torch_PID_...>"); only this process's own."""
    match = _SHM_ENTRY.search(message)
    if match is None or int(match[2]) != os.getpid():
        return False
    try:
        import _posixshmem  # what multiprocessing.shared_memory unlinks with

        _posixshmem.shm_unlink(match[1])
    except FileNotFoundError:
        return True
    except (ImportError, OSError):
        return False
    return True


@dataclass
class Batch(CrossProcess):
    """One batch from the stream, in walk order: every readable image's path; pixels for those decoded here and
    vectors for those found in the image-embedding store; skip reasons for files that could not be read."""

    paths: list[str] = field(default_factory=list)
    pixels: torch.Tensor | None = None
    decoded: list[int] = field(default_factory=list)  # indices into paths that `pixels` holds, in order
    stored: dict[int, np.ndarray] = field(default_factory=dict)  # index into paths -> stored vector
    identities: dict[int, FileIdentity] = field(default_factory=dict)  # index -> identity to (re)store
    skipped: list[tuple[str, str]] = field(default_factory=list)
    # Where each skipped file stood in the walk: how many of `paths` come before it (set by in_walk_order).
    skipped_at: list[int] = field(default_factory=list)


def in_walk_order(batch: Batch, chunk: list[tuple[str, bool]]) -> Batch:
    """Put the batch's skip records in walk order (the chunk it was made of) and say where each stands among
    `paths`, so the records of a batch come out in walk order: a loader learns of a file it could not read
    in whatever order it finds out (a worker that crashed on it, a device decode that failed), after some of
    the files that follow it."""
    pending: dict[str, list[tuple[str, str]]] = {}
    for entry in batch.skipped:
        pending.setdefault(entry[0], []).append(entry)
    skipped, at, k = [], [], 0
    for path, _ in chunk:
        if k < len(batch.paths) and batch.paths[k] == path:
            k += 1
        elif pending.get(path):
            skipped.append(pending[path].pop(0))
            at.append(k)
    leftover = [e for entries in pending.values() for e in entries]  # not in the chunk: keep them, at the end
    batch.skipped = skipped + leftover
    batch.skipped_at = at + [len(batch.paths)] * len(leftover)
    return batch


def remembered(parts: Iterator[list], seen: deque) -> Iterator[list]:
    """The chunks, each kept in `seen` until its batch comes back (results come in task order)."""
    for chunk in parts:
        seen.append(chunk)
        yield chunk


class SkipFile(Exception):
    """A file that cannot be classified; the message is the one-line reason."""


# -- decoding ----------------------------------------------------------------------------------------------


def load_image(
    path: str,
    preprocess: Callable[[Image.Image], torch.Tensor],
    draft: int | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> torch.Tensor:
    """Decode one file to the model's input tensor, or raise SkipFile with the reason.

    With `draft`, a JPEG much larger than the model input is decoded at a reduced DCT scale (1/2, 1/4, 1/8) that
    still leaves both sides >= `draft` pixels; the model's own resize then does the rest. Several times faster
    on photos, with slightly different pixels (`--exact-preprocess` turns it off). Images with more than
    `max_pixels` pixels are skipped from their header, before any pixel is decoded. A member address
    `SHARD.tar#MEMBER` (zsclip.shards) is read from its shard in place; its skip reason names the sample's key
    and shard.
    """
    member = is_member(path)
    if member is not None:  # SHARD.tar#MEMBER: the member's bytes, read in place (zsclip.shards)
        try:
            return decode_image(io.BytesIO(read_member(*member)), path, preprocess, draft, max_pixels)
        except (SkipFile, MemberError) as exc:
            raise SkipFile(f"{describe(*member)}: {exc}") from None
    check_file(path)
    return decode_image(path, path, preprocess, draft, max_pixels)


def decode_image(
    source: str | IO[bytes],
    path: str,
    preprocess: Callable[[Image.Image], torch.Tensor],
    draft: int | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> torch.Tensor:
    """load_image's decoding, from a file name or bytes already read (the Ray engine reads object storage);
    `path` names the file in skip reasons."""
    try:
        with open_image(source) as im:
            check_pixels(im.size, max_pixels)
            if draft and im.format == "JPEG" and min(im.size) >= 2 * draft:
                im.draft("RGB", (draft, draft))
            im.load()
            return preprocess(to_rgb(_upright(im)))
    except UnidentifiedImageError:
        if path.lower().endswith(_HEIF) and not HEIF_PLUGIN:
            raise SkipFile("HEIC/HEIF images need the pillow-heif plugin: pip install pillow-heif") from None
        raise SkipFile("not a recognised image format") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise SkipFile(f"cannot decode: {' '.join(str(exc).split()) or type(exc).__name__}") from None


def open_image(source: str | IO[bytes]) -> Image.Image:
    """Image.open (the header only) without PIL's global pixel limit, which check_pixels replaces."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            return Image.open(source)
        finally:
            Image.MAX_IMAGE_PIXELS = limit


def check_file(path: str) -> None:
    """Raise SkipFile unless `path` is a non-empty regular file (a FIFO or device would block any read)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise SkipFile("symbolic link loop") from None
        reason = "broken symbolic link" if os.path.islink(path) else (exc.strerror or str(exc))
        raise SkipFile(reason) from None
    if not stat.S_ISREG(st.st_mode):
        raise SkipFile("not a regular file")
    if st.st_size == 0:
        raise SkipFile("empty file")
    if not os.access(path, os.R_OK):
        raise SkipFile("permission denied")


def check_pixels(size: tuple[int, int], max_pixels: int | None) -> None:
    if max_pixels and size[0] * size[1] > max_pixels:
        raise SkipFile(
            f"{size[0]}x{size[1]} = {size[0] * size[1]:,} pixels, over the --max-pixels limit of {max_pixels:,}"
        )


def _upright(im: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(im)
    except Exception:  # a broken EXIF block should not cost the image
        return im


def to_rgb(im: Image.Image) -> Image.Image:
    """RGB for the model: 16-bit greyscale rescaled, transparency composited onto white."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float32)
        peak = 65535.0 if im.mode.startswith("I;16") else max(float(arr.max()), 1.0)
        im = Image.fromarray(np.clip(arr / peak * 255.0, 0, 255).astype(np.uint8), "L")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")


# -- streaming ---------------------------------------------------------------------------------------------
@dataclass
class BatchLoader:
    """Turns one chunk of walk entries into a Batch; runs in worker processes, so it must pickle."""

    preprocess: Callable
    store: ImageStore | None = None
    draft: int | None = None
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    file_timeout: float | None = DEFAULT_FILE_TIMEOUT

    def __call__(self, chunk: list[tuple[str, bool]], failed: list = (), mark: Callable[[int], None] = id) -> Batch:
        batch = Batch()
        batch.skipped.extend((path, reason) for (path, _), reason in failed)
        limit = None if in_worker_process() else self.file_timeout  # in a worker, the supervisor times files
        tensors = []
        for n, (path, explicit) in enumerate(chunk):
            mark(n)
            try:
                with time_limit(limit):
                    if not (explicit or has_image_extension(path) or looks_like_image(path)):
                        continue
                    vector, identity = self._lookup(path)
                    if vector is not None and self.max_pixels and self.max_pixels < DEFAULT_MAX_PIXELS:
                        self._check_stored_pixels(path)  # stored under another limit: this run's still holds
                if vector is None:
                    if not getattr(self.preprocess, "ready", True):
                        mark(None)  # building the transform (importing open_clip) is not this file's time
                        self.preprocess.prepare()
                        mark(n)
                    with time_limit(limit):
                        tensors.append(load_image(path, self.preprocess, self.draft, self.max_pixels))
            except SkipFile as exc:
                batch.skipped.append((path, str(exc)))
                continue
            index = len(batch.paths)
            if vector is None:
                batch.decoded.append(index)
            else:
                batch.stored[index] = vector
            batch.paths.append(path)
            if identity is not None:
                batch.identities[index] = identity
        if tensors:
            batch.pixels = stack(tensors)
        return batch

    def _check_stored_pixels(self, path: str) -> None:
        member = is_member(path)
        try:
            with open_image(io.BytesIO(read_member(*member)) if member else path) as im:
                check_pixels(im.size, self.max_pixels)
        except (OSError, MemberError):
            pass  # it decoded when it was stored; the header read failing now is the store's business

    def _lookup(self, path: str) -> tuple[np.ndarray | None, FileIdentity | None]:
        if self.store is None:
            return None, None
        try:
            return self.store.lookup(path)
        except sqlite3.Error:  # an unreadable store costs a re-encode, never the run
            return None, None


@contextlib.contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Interrupt a blocking read after `seconds` (main thread only; a long C-level decode is not interrupted)."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise SkipFile(f"took longer than {seconds:g} s to read and decode (--file-timeout)")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def default_workers() -> int:
    """Leave a core to the encoder: decoding overlaps with it instead of competing."""
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def chunks(
    sources: list[tuple[str, bool]],
    batch_size: int,
    recursive: bool = True,
    exclude: Container[str] = (),
    shard: tuple[int, int] | None = None,
) -> Iterator[list[tuple[str, bool]]]:
    """The walk cut into batches, leaving out `exclude` (paths a resumed run already has) and, with `shard`,
    the files of other shards (zsclip.sources.in_shard)."""
    entries = walk(sources, recursive, shard, exclude)
    while chunk := list(islice(entries, batch_size)):
        yield chunk


def iter_batches(
    sources: list[tuple[str, bool]],
    preprocess: Callable,
    *,
    batch_size: int = 32,
    workers: int | None = None,
    recursive: bool = True,
    store: ImageStore | None = None,
    draft: int | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    file_timeout: float | None = DEFAULT_FILE_TIMEOUT,
    exclude: Container[str] = (),
    shard: tuple[int, int] | None = None,
) -> Iterator[Batch]:
    """Stream decoded batches in walk order; memory stays bounded by a few batches per worker whatever the
    folder size. With workers, a file that crashes its decoder or takes longer than `file_timeout` seconds
    becomes a skip record (zsclip.workers); with workers=0 only blocking reads are interrupted."""
    check_limits(batch_size, workers, max_pixels, file_timeout)
    workers = default_workers() if workers is None else workers
    seen: deque[list] = deque()
    parts = remembered(chunks(sources, batch_size, recursive, exclude, shard), seen)
    loader = BatchLoader(preprocess, store, draft, max_pixels, file_timeout)
    batches = (
        map(loader, parts) if workers == 0 else run_tasks(parts, loader, workers=workers, item_timeout=file_timeout)
    )
    yield from (in_walk_order(batch, seen.popleft()) for batch in batches)
