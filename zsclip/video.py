"""Video files -> frames sampled by timestamp -> image embeddings, through the image-embedding store.

A frame becomes (identity, pixels) like an image file: its identity is the video's (path, size, mtime, ctime,
inode: a stat, not a hash, so a 10 GB file is not read to be recognised), its timestamp and the sampling rule;
its pixels go through the model's own preprocessing and `encode.encode_images`. Asking the same video about new
texts therefore decodes and encodes nothing.

Sampling: at `fps` samples per second, sample k stands for the interval [k/fps, (k+1)/fps) and takes the frame
shown at its middle, (k + 0.5)/fps (the last frame whose timestamp is not after it). Decoding is sequential with
FFmpeg's threads; the compressed packets of one group of pictures (keyframe to keyframe) are held until the next
keyframe shows whether the group holds a sample, so groups without one are never decoded and a group is decoded
only up to its last sample; far gaps seek the container to the keyframe before the next sample. Only one group's
packets and a few frames are held, never the video. A decoding thread feeds the encoder through a short queue, so
decoding overlaps encoding.

PyAV (`pip install 'zsclip[video]'`) is imported only inside the functions that read or write video.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from .errors import UsageError, ZsclipError

SAMPLING = "mid-1"  # the rule above; bump when it (or frame conversion) changes which pixels a sample gets
_SCAN = "scan"
_MISSING = "PyAV is not installed; video needs it: pip install 'zsclip[video]' (or pip install av)"
NONREF_RATIO = 4  # decode only reference frames when the video has this many frames per sample or more
_SEEK_MIN_SECONDS = 5.0  # below this, reading on is cheaper than a seek (which re-decodes from a keyframe)


def check_available() -> None:
    """Fail at once, in one line with the pip command, when PyAV is missing (before a model loads)."""
    _av()


def _av():
    try:
        import av
    except ImportError as exc:
        raise ZsclipError(_MISSING) from exc
    av.logging.set_level(None)  # FFmpeg's own console chatter; errors reach us as exceptions and are summarised
    return av


@dataclass
class VideoInfo:
    """What the container header says (read without decoding a frame)."""

    path: str
    duration: float | None  # seconds, from the header; None when the header does not say
    width: int
    height: int
    codec: str
    rate: float | None  # nominal frames per second
    start: float  # the stream's first timestamp, seconds; sample times are relative to it


def open_container(path: str):
    """av.open with one-line errors: missing file (usage), not a video, unreadable (failed run)."""
    av = _av()
    if not os.path.exists(path):
        raise UsageError(f"{path}: no such file")
    if os.path.isdir(path):
        raise UsageError(f"{path} is a directory; give video files")
    try:
        container = av.open(path, metadata_errors="ignore")
    except av.error.EOFError as exc:
        raise ZsclipError(f"{path}: zero-length video (the file ends before any frame)") from exc
    except av.error.FFmpegError as exc:
        raise ZsclipError(f"{path}: not a readable video ({_reason(exc)}){_hint(path)}") from exc
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams})
        container.close()
        raise ZsclipError(f"{path}: has no video stream (streams: {', '.join(kinds) or 'none'})")
    return container


def _hint(path: str) -> str:
    """What the file probably is, from its first bytes: text or HTML saved under a video's name, or an MP4 whose
    index never got written (a recording cut short)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return ""
    if head and all(b in b"\t\n\r\f" or 32 <= b < 127 or b >= 128 for b in head) and b"\0" not in head:
        try:
            (head if len(head) < 4096 else head[:-3]).decode("utf-8")  # a cut may split the last character
            return "; it is not a video file (it holds text)"
        except UnicodeDecodeError:
            pass
    if path.lower().endswith((".mp4", ".mov", ".m4v")) and head[4:8] in (b"ftyp", b"mdat", b"wide", b"free"):
        return "; an MP4 cut short while recording lacks its index and cannot be read"
    return ""


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return " ".join(str(text).split())[:200]


def probe(path: str) -> VideoInfo:
    """Read the header; errors are one line."""
    container = open_container(path)
    try:
        stream = container.streams.video[0]
        tb = float(stream.time_base) if stream.time_base else 0.0
        start = stream.start_time * tb if stream.start_time is not None else 0.0
        duration = stream.duration * tb if stream.duration else None
        if duration is None and container.duration:
            duration = container.duration / 1_000_000 - max(start, 0.0)
        rate = stream.average_rate or stream.guessed_rate
        ctx = stream.codec_context
        return VideoInfo(path, duration, ctx.width, ctx.height, ctx.name, float(rate) if rate else None, start)
    finally:
        container.close()


def _upright_turns(frame) -> int:
    """Quarter turns (counter-clockwise, np.rot90's k) that show the frame as a player would."""
    degrees = getattr(frame, "rotation", 0) or 0  # the display matrix: counter-clockwise degrees
    return round(degrees / 90) % 4


def video_key(path: str) -> str:
    """The video's identity (zsclip.identity: path, size, mtime, ctime and inode), hashed: it changes whenever
    the file may have."""
    from .identity import files_identity

    return files_identity([path])


def check_fps(fps: float) -> None:
    if not (isinstance(fps, int | float) and math.isfinite(fps) and fps > 0):
        raise UsageError(f"--fps {fps}: must be a positive number of samples per second")


# -- decoding ----------------------------------------------------------------------------------------------
@dataclass
class FrameReader:
    """Iterate (k, RGB uint8 array) for sample k = 0, 1, ... of a video at `fps`, upright, its shorter side scaled
    down to `short_side` (never up). Samples in a stretch that does not decode are left out and listed in
    `missing`; what else the scan found (truncation, variable frame rate) is known once iteration ends."""

    path: str
    fps: float
    short_side: int | None = None
    end: float | None = None  # sample times stop before this (the header's duration); None: at the stream's end
    skip_nonref: bool = False  # decode reference frames only (see embed_video)
    samples: int = 0  # samples the video has (known once iteration ends)
    missing: list[int] = field(default_factory=list)
    truncated: tuple[float, float, str] | None = None  # (where frames end, where the header says, why)
    vfr: tuple[float, float] | None = None  # (shortest, longest) frame interval when they differ
    rotation: int = 0  # degrees clockwise a player turns the frames (the first frame's display matrix)
    decoded_frames: int = 0

    def target(self, k: int) -> float:
        return (k + 0.5) / self.fps

    def _in_range(self, k: int) -> bool:
        # Sample 0 always: a video shorter than half a sample interval still shows one frame.
        return k == 0 or self.end is None or self.target(k) < self.end

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        av = _av()
        container = open_container(self.path)
        try:
            yield from self._read(av, container)
        finally:
            container.close()

    def _read(self, av, container) -> Iterator[tuple[int, np.ndarray]]:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame + slice threads: FFmpeg decodes on every core
        if self.skip_nonref:
            stream.codec_context.skip_frame = "NONREF"
        tb = float(stream.time_base)
        start = stream.start_time * tb if stream.start_time is not None else 0.0
        frame_dur = 1.0 / float(stream.average_rate or stream.guessed_rate or 30)
        state = {"k": 0, "prev": None, "why": "", "last_pt": 0.0}
        errors: list[float] = []  # times of packets that failed to decode, not yet passed by a decoded frame
        intervals = _Intervals()

        def frames_of(packets: list) -> Iterator:
            for packet in packets:
                try:
                    yield from packet.decode()
                except av.error.FFmpegError as exc:  # a damaged packet: note where, decode on from the next
                    errors.append(packet.pts * tb - start if packet.pts is not None else state["last_pt"])
                    state["why"] = _reason(exc)

        def serve(frames: Iterable) -> Iterator[tuple[int, np.ndarray]]:
            """Give every sample whose time a frame passes the frame shown before it."""
            for frame in frames:
                if frame.pts is None:
                    continue
                t = frame.pts * tb - start
                self.decoded_frames += 1
                prev = state["prev"]
                if prev is not None and t <= prev[0]:
                    continue  # a frame from before a skip or seek, already passed
                # Frames between prev and this one that failed to decode: samples there have no true frame.
                # (Errors are matched by time: with B-frames, frames come out of the decoder out of step.)
                damaged = prev is not None and any(prev[0] < e < t for e in errors)
                k = state["k"]
                while self._in_range(k) and self.target(k) < t:
                    if prev is None:
                        yield k, self._convert(frame)  # a sample before the first frame shows the first frame
                    elif damaged and self.target(k) - prev[0] > 1.5 * frame_dur:
                        self.missing.append(k)
                    else:
                        yield k, self._convert(prev[1])
                    k += 1
                state["k"] = k
                errors[:] = [e for e in errors if e >= t]
                state["prev"] = (t, frame)

        packets = container.demux(stream)
        at_end = False
        pending: list = []  # packets of the current group of pictures not yet sent to the decoder
        decodable = True  # False after a seek, until the keyframe it lands on
        keyint, last_key = 0.0, None  # the longest keyframe interval seen, and the last keyframe's time
        sought = -math.inf  # the target of the last seek: one seek per target, even if it lands far before it
        while self._in_range(state["k"]):
            try:
                packet = next(packets)
            except StopIteration:
                at_end = True
                break
            except av.error.FFmpegError as exc:  # the container itself is damaged from here on
                state["why"] = _reason(exc)
                break
            if packet.size == 0:  # the demuxer's end-of-stream marker
                continue
            pt = packet.pts * tb - start if packet.pts is not None else None
            if pt is not None and decodable:
                intervals.add(pt)
                state["last_pt"] = pt
            target = self.target(state["k"])
            if packet.is_keyframe and pt is not None:
                if last_key is not None and pt > last_key:
                    keyint = max(keyint, pt - last_key)
                last_key = pt
                if pending and target < pt:
                    yield from serve(frames_of(pending))  # the sample lies in the rest of the group
                pending, decodable = [], True  # a tail without a sample is never decoded
                if keyint and target - pt > max(_SEEK_MIN_SECONDS, 2 * keyint) and target > sought:
                    sought = target
                    container.seek(int((target + start) / tb), stream=stream, backward=True)
                    stream.codec_context.flush_buffers()  # every sample before `target` is served already
                    decodable = False
                    intervals.cut()
                    continue
            if not decodable:
                continue
            pending.append(packet)
            if pt is not None and pt > target:  # packets have reached the next sample: decode up to here
                yield from serve(frames_of(pending))
                pending = []
        if self._in_range(state["k"]):
            yield from serve(frames_of(pending))
            try:
                yield from serve(stream.codec_context.decode(None))  # the decoder's delayed frames
            except av.error.FFmpegError as exc:
                state["why"] = _reason(exc)
        intervals.cut(complete=at_end)
        if intervals.hi - intervals.lo > 0.25 * frame_dur:
            self.vfr = (intervals.lo, intervals.hi)
        yield from self._finish(state, frame_dur, bool(errors))

    def _finish(self, state: dict, frame_dur: float, errors: bool) -> Iterator[tuple[int, np.ndarray]]:
        """Samples after the last decoded frame: shown by it while the video lasts, missing if it was cut."""
        k, prev = state["k"], state["prev"]
        if prev is None:
            self.samples = 0
            return
        last_t, last_frame = prev
        stream_end = last_t + frame_dur
        damaged = errors or state["why"]
        if self.end is not None and self.end > stream_end + (frame_dur if damaged else max(1.0, 10 * frame_dur)):
            self.truncated = (stream_end, self.end, state["why"])
            self.end = stream_end
        end = self.end if self.end is not None else stream_end
        while self.target(k) < end or k == 0:  # sample 0 even when the video ends before its time (see _in_range)
            yield k, self._convert(last_frame)
            k += 1
        self.samples = k

    def _convert(self, frame) -> np.ndarray:
        self.rotation = self.rotation or (4 - _upright_turns(frame)) % 4 * 90
        return frame_rgb(frame, self.short_side)


class _Intervals:
    """Shortest and longest interval between frame timestamps, from packets in decoding order: sorted in windows
    that overlap by more than any reordering (B-frames), so memory stays small on any length of video."""

    WINDOW, KEEP = 512, 64

    def __init__(self) -> None:
        self.pts: list[float] = []
        self.lo, self.hi = math.inf, 0.0

    def add(self, t: float) -> None:
        self.pts.append(t)
        if len(self.pts) >= self.WINDOW:
            self._take(keep=self.KEEP)

    def cut(self, complete: bool = False) -> None:
        """A seek, or reading stops: what is buffered is measured and no interval spans the jump. Unless the
        stream was read to its end, the last few packets may miss B-frames still to come, so they are left out."""
        self.pts = sorted(self.pts)[: None if complete else -16]
        self._take(keep=0)

    def _take(self, keep: int) -> None:
        ordered = sorted(self.pts)
        gaps = np.diff(ordered[: len(ordered) - keep + 1] if keep else ordered)
        gaps = gaps[gaps > 0]
        if len(gaps):
            self.lo, self.hi = min(self.lo, float(gaps.min())), max(self.hi, float(gaps.max()))
        self.pts = ordered[len(ordered) - keep :] if keep else []


def frame_rgb(frame, short_side: int | None = None) -> np.ndarray:
    """An av.VideoFrame as upright RGB, its shorter side scaled down to `short_side` (never up)."""
    w, h = frame.width, frame.height
    if short_side and min(w, h) > short_side:
        scale = short_side / min(w, h)
        w, h = max(2, round(w * scale)), max(2, round(h * scale))
    # FFmpeg scales and converts in C (area averaging: no aliasing when shrinking); the model's own preprocessing
    # then does the final resize, as encode.draft_size does for large JPEGs.
    rgb = frame.to_ndarray(width=w, height=h, format="rgb24", interpolation="AREA")
    turns = _upright_turns(frame)
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


def grab_frames(path: str, times: list[float], short_side: int | None = None) -> list[np.ndarray | None]:
    """The frames shown at a few `times` (seconds from the start), each found by a seek; None where none decodes.
    For thumbnails: a handful of seeks beats decoding the whole video."""
    av = _av()
    out: list[np.ndarray | None] = []
    container = open_container(path)
    try:
        stream = container.streams.video[0]
        tb = float(stream.time_base)
        start = stream.start_time * tb if stream.start_time is not None else 0.0
        for t in times:
            shown = None
            try:
                container.seek(max(0, int((t + start) / tb)), stream=stream, backward=True)
                for frame in container.decode(stream):
                    if frame.pts is None:
                        continue
                    if shown is not None and frame.pts * tb - start > t:
                        break
                    shown = frame
            except av.error.FFmpegError:
                pass
            out.append(frame_rgb(shown, short_side) if shown is not None else None)
    finally:
        container.close()
    return out


def describe_gaps(missing: list[int], fps: float) -> str:
    """'no frame decodes between 3.0 s and 5.5 s (damaged data); those samples are left out'."""
    runs: list[list[int]] = []
    for k in missing:
        if runs and k == runs[-1][1] + 1:
            runs[-1][1] = k
        else:
            runs.append([k, k])
    spans = ", ".join(f"{a / fps:.1f}-{(b + 1) / fps:.1f} s" for a, b in runs)
    return f"no frame decodes in {spans} (damaged data); those samples are left out"


# -- embedding ---------------------------------------------------------------------------------------------
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
    from .cache import Cache
    from .encode import draft_size
    from .models import vector_key
    from .store import ImageStore, variant_key

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
    import torch
    from PIL import Image

    from .encode import encode_images

    batch_size = batch_size or (256 if model.device.type == "cuda" else 32)
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
                done.put((k, model.preprocess(Image.fromarray(rgb))))
            done.put(None)
        except BaseException as exc:  # handed to the encoding side, which raises it there
            done.put(exc)

    thread = threading.Thread(target=decode, name="zsclip-video-decode", daemon=True)
    thread.start()
    vectors: dict[int, np.ndarray] = {}
    batch: list[tuple[int, torch.Tensor]] = []
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
                features = encode_images(model, torch.stack([p for _, p in batch])).cpu().numpy()
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
        path, fps, float(duration), (np.arange(m) + 0.5) / fps, features, valid, reader.rotation,
        reader.truncated[1] if reader.truncated else 0.0, reader.vfr or (0.0, 0.0), encoded=len(vectors),
    )  # fmt: skip
    if frame_store is not None:
        frame_store.put_scan(result)
    return result


# -- the store ---------------------------------------------------------------------------------------------
@dataclass
class VideoStore:
    """Frame vectors of one video and sampling, in the image-embedding store (so `zsclip cache clear` clears
    them with the rest). Each frame is a row keyed by `video:<identity>|<sampling>|t=<seconds>`; one more row per
    fps, its "vector" a float32 record [duration, rotation, header end, shortest and longest frame interval,
    valid (0/1) per sample], says what the scan found, so a second query knows it has every frame (and repeats
    the scan's warnings) without decoding."""

    store: object  # zsclip.store.ImageStore
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
        from .store import FileIdentity

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
            self.path, self.fps, duration, times, features, valid, int(rotation), header_end, (lo, hi),
            reused=len(keys),
        )  # fmt: skip


# -- writing (tests, benchmarks, demos) ----------------------------------------------------------------------
def write_video(
    path: str,
    frames: Iterable[np.ndarray],
    fps: float = 10,
    *,
    codec: str = "libx264",
    gop: int | None = None,
    times: Iterable[float] | None = None,
    options: dict | None = None,
) -> str:
    """Write RGB uint8 frames (H x W x 3, even sides) as a video; `times` (seconds) gives each frame its own
    timestamp, for variable-frame-rate files. Returns `path`."""
    av = _av()
    from fractions import Fraction

    frames = iter(frames)
    first = next(frames, None)
    if first is None:
        raise ValueError("write_video needs at least one frame")
    stamps = iter(times) if times is not None else None
    with av.open(path, "w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = first.shape[1], first.shape[0]
        stream.pix_fmt = "yuv420p"
        stream.options = {**(options or {}), **({"g": str(gop)} if gop else {})}
        if stamps is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        for rgb in itertools.chain([first], frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            if stamps is not None:
                frame.pts, frame.time_base = round(next(stamps) * 1000), Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
