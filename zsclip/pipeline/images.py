"""Paths -> image files -> decoded, preprocessed batches. Bad files become skip records, never exceptions.

Inputs are image files, folders (walked in sorted order, recursively by default, hidden entries skipped, symlinks
followed without loops) and `@list.txt` files of paths. Inside folders a file counts as an image by its extension
or, lacking one, by its magic bytes; anything else is ignored silently. The main process walks and cuts batches;
decoding runs in supervised worker processes (zsclip.pipeline.workers), and batches stream out in walk order.
"""

from __future__ import annotations

import contextlib
import errno
import io
import itertools
import os
import signal
import sqlite3
import stat
import threading
import warnings
from collections import deque
from collections.abc import Callable, Container, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from zsclip.core.limits import DEFAULT_FILE_TIMEOUT, DEFAULT_MAX_PIXELS, check_limits
from zsclip.pipeline.formats import MissingExtra, is_raw, missing_reader, open_raw
from zsclip.pipeline.sources import has_image_extension, looks_like_image, walk
from zsclip.pipeline.workers import in_worker_process, run_tasks
from zsclip.store.embeddings import FileIdentity, ImageStore
from zsclip.store.shards import MemberError, describe, is_member, read_member


@dataclass
class Batch:
    """One batch from the stream, in walk order: every readable image's path; pixels for those decoded here and
    vectors for those found in the image-embedding store; skip reasons for files that could not be read.

    `pixels` are the model's input before normalisation (zsclip.models.preprocess): uint8 [n, height, width, 3], a
    quarter of float32's bytes between processes; zsclip.pipeline.gpu_decode's path gives normalised float tensors
    instead."""

    paths: list[str] = field(default_factory=list)
    pixels: Any = None
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
    preprocess: Callable[[Image.Image], np.ndarray],
    draft: int | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Decode one file to the model's input pixels (what `preprocess` makes of the upright RGB image: in the
    pipeline, Preprocess.geometry's uint8 array), or raise SkipFile with the reason.

    With `draft`, a JPEG much larger than the model input is decoded at a reduced DCT scale (1/2, 1/4, 1/8) that
    still leaves both sides >= `draft` pixels; the model's own resize then does the rest. Several times faster
    on photos, with slightly different pixels (`--exact-preprocess` turns it off). Images with more than
    `max_pixels` pixels are skipped from their header, before any pixel is decoded. A member address
    `SHARD.tar#MEMBER` (zsclip.store.shards) is read from its shard in place; its skip reason names the sample's key
    and shard.
    """
    member = is_member(path)
    if member is not None:  # SHARD.tar#MEMBER: the member's bytes, read in place (zsclip.store.shards)
        try:
            return decode_image(io.BytesIO(read_member(*member)), path, preprocess, draft, max_pixels)
        except (SkipFile, MemberError) as exc:
            raise SkipFile(f"{describe(*member)}: {exc}") from None
    check_file(path)
    return decode_image(path, path, preprocess, draft, max_pixels)


def decode_image(
    source: str | IO[bytes],
    path: str,
    preprocess: Callable[[Image.Image], np.ndarray],
    draft: int | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """load_image's decoding, from a file name or bytes already read (the Ray engine reads object storage);
    `path` names the file in skip reasons."""
    try:
        with open_image(source) as im:
            check_pixels(im.size, max_pixels)
            if draft and im.format == "JPEG" and min(im.size) >= 2 * draft:
                im.draft("RGB", (draft, draft))
            im.load()
            return preprocess(to_rgb(upright(im)))
    except MissingExtra as exc:
        raise SkipFile(str(exc)) from None
    except UnidentifiedImageError:
        raise SkipFile(missing_reader(path) or "not a recognised image format") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise SkipFile(f"cannot decode: {' '.join(str(exc).split()) or type(exc).__name__}") from None


def open_image(source: str | IO[bytes]) -> Image.Image:
    """Image.open (the header only) without PIL's global pixel limit, which check_pixels replaces; a camera RAW
    file opens as its embedded preview (zsclip.pipeline.formats)."""
    if isinstance(source, str) and is_raw(source):
        return open_raw(source)
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


def upright(im: Image.Image) -> Image.Image:
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
# Files decoded in this process before worker processes start: a batch costs less than starting a worker (20
# ImageNet photos, shipped model, whole process: 6.7 s with a worker, 6.3 s without; a worker starts in ~0.4 s).
IN_PROCESS = 32


@dataclass
class Looked:
    """One chunk of the walk after the store lookups (in this process): per image, its path, stored vector (None:
    to decode) and identity; the files that are not images to read, with the reason."""

    entries: list[tuple[str, np.ndarray | None, FileIdentity | None]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def todo(self) -> list[tuple[int, str]]:
        """(index into entries, path) of every file to decode."""
        return [(k, path) for k, (path, vector, _) in enumerate(self.entries) if vector is None]


@dataclass
class Decoded:
    """What a decoder made of a list of (index, path): pixels [m, height, width, 3] for the indices in `rows`, in
    order, and (index, path, reason) for the files it could not read."""

    pixels: np.ndarray | None = None
    rows: list[int] = field(default_factory=list)
    skipped: list[tuple[int, str, str]] = field(default_factory=list)


@dataclass
class Lookup:
    """The part of reading a chunk that needs no decoding, in this process: which entries are images, and the
    store's vector for those it holds (a fully stored folder starts no worker)."""

    store: ImageStore | None = None
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    file_timeout: float | None = DEFAULT_FILE_TIMEOUT

    def __call__(self, chunk: list[tuple[str, bool]]) -> Looked:
        looked = Looked()
        for path, explicit in chunk:
            try:
                with time_limit(self.file_timeout):
                    if not (explicit or has_image_extension(path) or looks_like_image(path)):
                        continue
                    vector, identity = self._lookup(path)
                    if vector is not None and self.max_pixels and self.max_pixels < DEFAULT_MAX_PIXELS:
                        self._check_stored_pixels(path)  # stored under another limit: this run's still holds
            except SkipFile as exc:
                looked.skipped.append((path, str(exc)))
                continue
            looked.entries.append((path, vector, identity))
        return looked

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


@dataclass
class Decoder:
    """Decodes (index, path) items to pixels; runs in worker processes, so it must pickle. `preprocess` makes a
    decoded image the batch's pixels (Preprocess.geometry)."""

    preprocess: Callable[[Image.Image], np.ndarray]
    draft: int | None = None
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    file_timeout: float | None = DEFAULT_FILE_TIMEOUT

    def __call__(self, items: list[tuple[int, str]], failed: list = (), mark: Callable[[int], None] = id) -> Decoded:
        decoded = Decoded(skipped=[(k, path, reason) for (k, path), reason in failed])
        limit = None if in_worker_process() else self.file_timeout  # in a worker, the supervisor times files
        pixels = []
        for n, (k, path) in enumerate(items):
            mark(n)
            try:
                with time_limit(limit):
                    pixels.append(load_image(path, self.preprocess, self.draft, self.max_pixels))
            except SkipFile as exc:
                decoded.skipped.append((k, path, str(exc)))
                continue
            decoded.rows.append(k)
        if pixels:
            decoded.pixels = np.stack(pixels)
        return decoded


def assemble(looked: Looked, decoded: Decoded) -> Batch:
    """The batch of a chunk, its entries in walk order: stored vectors, decoded pixels, skip records."""
    batch = Batch(skipped=list(looked.skipped))
    failed = {k: (path, reason) for k, path, reason in decoded.skipped}
    rows = set(decoded.rows)
    for k, (path, vector, identity) in enumerate(looked.entries):
        if k in failed:
            batch.skipped.append(failed[k])
            continue
        index = len(batch.paths)
        if vector is not None:
            batch.stored[index] = vector
        elif k in rows:
            batch.decoded.append(index)
        else:  # a decoder must account for every item it was given
            raise RuntimeError(f"{path}: neither decoded nor skipped")
        batch.paths.append(path)
        if identity is not None:
            batch.identities[index] = identity
    batch.pixels = decoded.pixels
    return batch


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
    the files of other shards (zsclip.pipeline.sources.in_shard)."""
    entries = walk(sources, recursive, shard, exclude)
    while chunk := list(itertools.islice(entries, batch_size)):
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
    folder size. Store lookups run here. Files to decode go to worker processes, where a file that crashes its
    decoder or takes longer than `file_timeout` seconds becomes a skip record (zsclip.pipeline.workers); by default
    (`workers` None) the first IN_PROCESS of them are decoded here, and workers start only when more come.
    workers=0 decodes everything here (only blocking reads are interrupted)."""
    check_limits(batch_size, workers, max_pixels, file_timeout)
    seen: deque[list] = deque()
    lookup = Lookup(store, max_pixels, file_timeout)
    looked = map(lookup, remembered(chunks(sources, batch_size, recursive, exclude, shard), seen))
    decoder = Decoder(preprocess, draft, max_pixels, file_timeout)
    for part, decoded in _decode(looked, decoder, workers, file_timeout):
        yield in_walk_order(assemble(part, decoded), seen.popleft())


def _decode(
    looked: Iterator[Looked], decoder: Decoder, workers: int | None, file_timeout: float | None
) -> Iterator[tuple[Looked, Decoded]]:
    """Each chunk with its decoded pixels, in order: here while that is cheaper (see iter_batches), then from
    here on by worker processes."""
    here = 0
    for part in looked:
        todo = part.todo()
        if workers == 0 or (workers is None and here + len(todo) <= IN_PROCESS):
            here += len(todo)
            yield part, decoder(todo)
            continue
        n = default_workers() if workers is None else workers
        yield from _in_workers(itertools.chain([part], looked), decoder, n, file_timeout)
        return


def _in_workers(
    looked: Iterator[Looked], decoder: Decoder, workers: int, file_timeout: float | None
) -> Iterator[tuple[Looked, Decoded]]:
    pending: deque[Looked] = deque()

    def tasks() -> Iterator[list[tuple[int, str]]]:
        for part in looked:
            pending.append(part)
            yield part.todo()

    for decoded in run_tasks(tasks(), decoder, workers=workers, item_timeout=file_timeout):
        yield pending.popleft(), decoded


def sample_pixels(
    sources: list[tuple[str, bool]],
    preprocess: Callable[[Image.Image], np.ndarray],
    n: int,
    recursive: bool = True,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> np.ndarray | None:
    """The first `n` readable images of the walk as pixels, decoded here (unreadable files are passed over, and at
    most 4n files are tried); None when there is none. What the int8 label check is calibrated on."""
    out = []
    for path, explicit in itertools.islice(walk(sources, recursive), 4 * n):
        if not (explicit or has_image_extension(path) or looks_like_image(path)):
            continue
        with contextlib.suppress(SkipFile), time_limit(DEFAULT_FILE_TIMEOUT):
            out.append(load_image(path, preprocess, None, max_pixels))
        if len(out) >= n:
            break
    return np.stack(out) if out else None
