"""Short synthetic videos for the video and locate tests: shapes from zsclip.datasets.shapes on a noisy background, each
present between known times."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from zsclip.datasets.shapes import Scene, render
from zsclip.video import write_video

SIZE = 96  # pixels; the shipped shapes model sees 64


def scene_frame(colour: str | None, shape: str | None, rng: np.random.Generator) -> np.ndarray:
    """One frame: the shape (large, centred) on grey noise, or the noise alone when shape is None."""
    scene = Scene(colour or "red", shape or "circle", "noisy", "grey", 0.3 if shape else 0.0, 0.5, 0.5, 0.4)
    return np.asarray(render(scene, 64, rng).resize((SIZE, SIZE)))


def shapes_video(
    path: Path,
    timeline: list[tuple[float, float, str, str]],
    seconds: float = 10.0,
    rate: float = 10.0,
    times: list[float] | None = None,
    **options,
) -> Path:
    """A video where each (start, end, colour, shape) of `timeline` is on screen in [start, end), noise elsewhere.
    `times`: the frames' own timestamps (a variable frame rate)."""
    rng = np.random.default_rng(0)
    stamps = times if times is not None else [i / rate for i in range(round(seconds * rate))]

    def shown(t: float) -> tuple[str | None, str | None]:
        for start, end, colour, shape in timeline:
            if start <= t < end:
                return colour, shape
        return None, None

    frames = [scene_frame(*shown(t), rng) for t in stamps]
    write_video(str(path), frames, rate, times=stamps if times is not None else None, **options)
    return path


def rotate_mp4(src: Path, dst: Path) -> Path:
    """Copy an MP4 with its track's display matrix set to 'turn 90 degrees clockwise' (as phones record)."""
    data = src.read_bytes()
    identity = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
    at = data.index(identity, data.index(b"tkhd"))
    turned = struct.pack(">9I", 0, 0x10000, 0, 0xFFFF0000, 0, 0, 0, 0, 0x40000000)
    dst.write_bytes(data[:at] + turned + data[at + 36 :])
    return dst
