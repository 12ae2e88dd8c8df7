"""Video files as containers: opening them with one-line errors, the header (probe), frames as upright RGB,
frames grabbed by seeking (thumbnails), and writing short videos (tests, benchmarks, demos).

PyAV (`pip install 'zsclip[video]'`) is imported only inside the functions that read or write video."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from zsclip.core.errors import UsageError, ZsclipError

_MISSING = "PyAV is not installed; video needs it: pip install 'zsclip[video]' (or pip install av)"


def check_available() -> None:
    """Fail at once, in one line with the pip command, when PyAV is missing (before a model loads)."""
    av_module()


def av_module():
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
    av = av_module()
    if not os.path.exists(path):
        raise UsageError(f"{path}: no such file")
    if os.path.isdir(path):
        raise UsageError(f"{path} is a directory; give video files")
    try:
        container = av.open(path, metadata_errors="ignore")
    except av.error.EOFError as exc:
        raise ZsclipError(f"{path}: zero-length video (the file ends before any frame)") from exc
    except av.error.FFmpegError as exc:
        raise ZsclipError(f"{path}: not a readable video ({reason(exc)}){_hint(path)}") from exc
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


def reason(exc: BaseException) -> str:
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


def upright_turns(frame) -> int:
    """Quarter turns (counter-clockwise, np.rot90's k) that show the frame as a player would."""
    degrees = getattr(frame, "rotation", 0) or 0  # the display matrix: counter-clockwise degrees
    return round(degrees / 90) % 4


def frame_rgb(frame, short_side: int | None = None) -> np.ndarray:
    """An av.VideoFrame as upright RGB, its shorter side scaled down to `short_side` (never up)."""
    w, h = frame.width, frame.height
    if short_side and min(w, h) > short_side:
        scale = short_side / min(w, h)
        w, h = max(2, round(w * scale)), max(2, round(h * scale))
    # FFmpeg scales and converts in C (area averaging: no aliasing when shrinking); the model's own preprocessing
    # then does the final resize, as encode.draft_size does for large JPEGs.
    rgb = frame.to_ndarray(width=w, height=h, format="rgb24", interpolation="AREA")
    turns = upright_turns(frame)
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


def grab_frames(path: str, times: list[float], short_side: int | None = None) -> list[np.ndarray | None]:
    """The frames shown at a few `times` (seconds from the start), each found by a seek; None where none decodes.
    For thumbnails: a handful of seeks beats decoding the whole video."""
    av = av_module()
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
    av = av_module()
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
