"""Frames sampled by timestamp: at `fps` samples per second, sample k stands for the interval [k/fps, (k+1)/fps)
and takes the frame shown at its middle, (k + 0.5)/fps (the last frame whose timestamp is not after it); a video
shorter than half a sample interval still gets one sample.

Decoding is sequential with FFmpeg's threads; the compressed packets of one group of pictures (keyframe to
keyframe) are held until the next keyframe shows whether the group holds a sample, so groups without one are
never decoded and a group is decoded only up to its last sample; far gaps seek the container to the keyframe
before the next sample. Only one group's packets and a few frames are held, never the video."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from zsclip.core.errors import UsageError
from zsclip.video.container import av_module, frame_rgb, open_container, reason, upright_turns

SAMPLING = "mid-1"  # the rule above; bump when it (or frame conversion) changes which pixels a sample gets
NONREF_RATIO = 4  # decode only reference frames when the video has this many frames per sample or more
_SEEK_MIN_SECONDS = 5.0  # below this, reading on is cheaper than a seek (which re-decodes from a keyframe)


def check_fps(fps: float) -> None:
    if not (isinstance(fps, int | float) and math.isfinite(fps) and fps > 0):
        raise UsageError(f"--fps {fps}: must be a positive number of samples per second")


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
        av = av_module()
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
                    state["why"] = reason(exc)

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
                state["why"] = reason(exc)
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
                state["why"] = reason(exc)
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
        self.rotation = self.rotation or (4 - upright_turns(frame)) % 4 * 90
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
