"""A video's sampled frames -> image embeddings, through the image-embedding store.

A frame becomes (identity, pixels) like an image file: its identity is the video's (path, size, mtime, ctime,
inode: a stat, not a hash, so a 10 GB file is not read to be recognised), its timestamp and the sampling rule;
its pixels go through the model's own preprocessing and `encode.encode_images`. Asking the same video about new
texts therefore decodes and encodes nothing. A decoding thread feeds the encoder through a short queue, so
decoding overlaps encoding."""

from __future__ import annotations

import contextlib
import math
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from zsclip.core.errors import UsageError, ZsclipError
from zsclip.models import vector_key
from zsclip.pipeline.encode import draft_size, encode_images
from zsclip.store.cache import Cache
from zsclip.store.embeddings import FileIdentity, ImageStore, variant_key
from zsclip.store.identity import files_identity
from zsclip.video.container import VideoInfo, probe
from zsclip.video.sampling import NONREF_RATIO, SAMPLING, FrameReader, check_fps, describe_gaps

_SCAN = "scan"


@dataclass
class VideoFrames:
    """Sample times, their unit-norm embeddings, and what the scan of the video found."""

    path: str
    fps: float
    duration: float  # seconds of video that decode
    times: np.ndarray  # [m] sample times (seconds, relative to the stream start)
    features: np.ndarray  # [m, dim] float32 unit-norm; rows of missing samples are NaN
    valid: np.ndarray  # [m] bool: False for samples that fell in a damaged stretch
    rotation: int = 0  # degrees clockwise the frames were turned to stand upright
    header_end: float = 0.0  # where the header said the video ends, when frames ended well before it; else 0
    vfr: tuple[float, float] = (0.0, 0.0)  # (shortest, longest) frame interval, when the frame rate varies
    encoded: int = 0  # frames that went through the image encoder in this call
    reused: int = 0  # frames whose vectors came from the image-embedding store

    @property
    def frames(self) -> int:
        return int(self.valid.sum())

    @property
    def warnings(self) -> list[str]:
        """One line per thing the user should know about this video (the same on a query served from the store)."""
        out = []
        if self.header_end:
            out.append(
                f"warning: {self.path}: frames end at {self.duration:.1f} s but its header says "
                f"{self.header_end:.1f} s (truncated or damaged); using the part that decodes"
            )
        missing = [int(i) for i in np.flatnonzero(~self.valid)]
        if missing:
            out.append(f"warning: {self.path}: {describe_gaps(missing, self.fps)}")
        if self.vfr[1]:
            lo, hi = self.vfr
            out.append(
                f"note: {self.path} has a variable frame rate or missing frames (frame intervals {lo * 1000:.0f}-"
                f"{hi * 1000:.0f} ms); frames are sampled by their timestamps"
            )
        if self.rotation:
            out.append(
                f"note: {self.path} has rotation metadata (shown turned {self.rotation} degrees clockwise); frames "
                "are turned the same way"
            )
        return out


def embed_video(
    model,
    path: str,
    fps: float = 2.0,
    *,
    batch_size: int | None = None,
    store: bool = True,
    cache=None,
    progress: Callable[[int, int | None], None] | None = None,
) -> VideoFrames:
    """Sample `path` at `fps`, encode the frames with `model`'s preprocessing and image tower, in batches, with
    decoding in a thread so it overlaps encoding. With `store`, frames are looked up in (and added to) the
    image-embedding store, so a second call for the same video and model decodes and encodes nothing."""

    check_fps(fps)
    info = probe(path)
    if info.duration is not None and info.duration <= 0:
        raise ZsclipError(f"{path}: zero-length video (its header says it lasts 0 s)")
    short_side = draft_size(model)
    # Sampling far sparser than the frame rate: frames no other frame refers to (most B-frames) are not decoded,
    # so a sample shows the last reference frame at or before its time, at most a few frames earlier (measured:
    # H.264 decoding 1.7x faster). Sampling near the frame rate decodes every frame.
    nonref = bool(info.rate and fps * NONREF_RATIO <= info.rate)
    sampling = f"{SAMPLING}{'-ref' if nonref else ''}"
    variant = f"{variant_key(vector_key(model), model.preprocess_key, short_side)}|video-{sampling}"
    frame_store = (
        VideoStore(ImageStore.open(cache or Cache(), model.fingerprint, variant), path, fps) if store else None
    )
    try:
        if frame_store is not None:
            known = frame_store.load()
            if known is not None:
                if progress:
                    progress(known.frames, known.frames)
                return known
        reader = FrameReader(path, fps, short_side, end=info.duration, skip_nonref=nonref)
        return _scan(model, reader, info, batch_size, frame_store, progress)
    finally:
        if frame_store is not None:
            frame_store.store.close()


def _scan(model, reader: FrameReader, info: VideoInfo, batch_size, frame_store, progress) -> VideoFrames:
    from PIL import Image

    batch_size = batch_size or (256 if model.device_type == "cuda" else 32)
    if batch_size < 1:
        raise UsageError(f"--batch-size {batch_size}: must be at least 1")
    path, fps = reader.path, reader.fps
    total = math.ceil(info.duration * fps - 0.5) if info.duration else None
    done: queue.Queue = queue.Queue(maxsize=2 * batch_size)  # bounded: decoding runs at most two batches ahead
    stop = threading.Event()

    def decode() -> None:
        try:
            for k, rgb in reader:
                if stop.is_set():
                    return
                done.put((k, model.preprocess.geometry(Image.fromarray(rgb))))
            done.put(None)
        except BaseException as exc:  # handed to the encoding side, which raises it there
            done.put(exc)

    thread = threading.Thread(target=decode, name="zsclip-video-decode", daemon=True)
    thread.start()
    vectors: dict[int, np.ndarray] = {}
    batch: list[tuple[int, np.ndarray]] = []
    finished = False
    try:
        while not finished:
            item = done.get()
            if isinstance(item, BaseException):
                raise item
            if item is None:
                finished = True
            else:
                batch.append(item)
            if batch and (finished or len(batch) >= batch_size):
                features = encode_images(model, np.stack([p for _, p in batch]))
                fresh = {k: v for (k, _), v in zip(batch, features, strict=True)}
                vectors.update(fresh)
                if frame_store is not None:
                    frame_store.put_frames(fresh)
                batch = []
                if progress:
                    progress(len(vectors), total)
    finally:
        stop.set()
        while thread.is_alive():  # unblock a decoder waiting on a full queue
            with contextlib.suppress(queue.Empty):
                done.get(timeout=0.1)
        thread.join()
    m = reader.samples
    if not vectors:
        what = "zero-length video" if m == 0 and not reader.missing else "damaged video"
        raise ZsclipError(f"{path}: no frame could be decoded ({what})")
    dim = next(iter(vectors.values())).shape[0]
    features = np.full((m, dim), np.nan, dtype=np.float32)
    for k, v in vectors.items():
        if k < m:
            features[k] = v
    valid = ~np.isnan(features[:, 0])
    duration = reader.end if reader.end is not None else m / fps
    result = VideoFrames(
        path,
        fps,
        float(duration),
        (np.arange(m) + 0.5) / fps,
        features,
        valid,
        reader.rotation,
        reader.truncated[1] if reader.truncated else 0.0,
        reader.vfr or (0.0, 0.0),
        encoded=len(vectors),
    )
    if frame_store is not None:
        frame_store.put_scan(result)
    return result


def video_key(path: str) -> str:
    """The video's identity (zsclip.store.identity: path, size, mtime, ctime and inode), hashed: it changes whenever
    the file may have."""

    return files_identity([path])


@dataclass
class VideoStore:
    """Frame vectors of one video and sampling, in the image-embedding store (so `zsclip cache clear` clears
    them with the rest). Each frame is a row keyed by `video:<identity>|<sampling>|t=<seconds>`; one more row per
    fps, its "vector" a float32 record [duration, rotation, header end, shortest and longest frame interval,
    valid (0/1) per sample], says what the scan found, so a second query knows it has every frame (and repeats
    the scan's warnings) without decoding."""

    store: object  # zsclip.store.embeddings.ImageStore
    path: str
    fps: float
    sampling: str = SAMPLING

    def __post_init__(self) -> None:
        st = os.stat(self.path)
        self._stat = (os.path.abspath(self.path), st.st_size, st.st_mtime_ns)
        self._prefix = f"video:{video_key(self.path)}|{self.sampling}"

    def _frame_key(self, t: float) -> str:
        return f"{self._prefix}|t={t:.6f}"

    def _identity(self, key: str, label: str):

        path, size, mtime = self._stat
        return FileIdentity(f"{path}#{label}", size, mtime, key)

    def _get(self, keys: list[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        s = self.store
        for i in range(0, len(keys), 900):  # SQLite's bound-parameter limit
            chunk = keys[i : i + 900]
            rows = s.conn.execute(
                "SELECT content_hash, vector FROM image_embeddings INDEXED BY image_by_hash WHERE content_hash IN "
                f"({','.join('?' * len(chunk))}) AND fingerprint = ? AND variant = ?",
                [*chunk, s.fingerprint, s.variant],
            ).fetchall()
            found.update((k, np.frombuffer(v, dtype=np.float32)) for k, v in rows)
        return found

    def put_frames(self, vectors: dict[int, np.ndarray]) -> None:
        rows = []
        for k, v in vectors.items():
            t = (k + 0.5) / self.fps
            rows.append((self._identity(self._frame_key(t), f"t={t:.3f}"), v))
        self.store.try_put(rows)

    def put_scan(self, frames: VideoFrames) -> None:
        facts = [frames.duration, frames.rotation, frames.header_end, *frames.vfr]
        record = np.concatenate([facts, frames.valid]).astype(np.float32)
        self.store.try_put([(self._identity(self._scan_key, f"{_SCAN}@{self.fps!r}fps"), record)])

    @property
    def _scan_key(self) -> str:
        return f"{self._prefix}|{_SCAN}|fps={self.fps!r}"

    def load(self) -> VideoFrames | None:
        """The stored frames of this video at this fps, or None unless every sample it has is stored."""
        record = self._get([self._scan_key]).get(self._scan_key)
        if record is None:
            return None
        duration, rotation, header_end, lo, hi = (float(x) for x in record[:5])
        valid = record[5:] > 0.5
        times = (np.arange(len(valid)) + 0.5) / self.fps
        keys = [self._frame_key(t) for t in times[valid]]
        found = self._get(keys)
        if len(found) < len(keys) or not keys:
            return None  # vectors cleared since (zsclip cache clear): scan again
        features = np.full((len(valid), len(found[keys[0]])), np.nan, dtype=np.float32)
        for i, key in zip(np.flatnonzero(valid), keys, strict=True):
            features[i] = found[key]
        return VideoFrames(
            self.path,
            self.fps,
            duration,
            times,
            features,
            valid,
            int(rotation),
            header_end,
            (lo, hi),
            reused=len(keys),
        )
