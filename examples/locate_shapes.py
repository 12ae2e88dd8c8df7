"""Write a short demo video for `zsclip locate`: shapes from the synthetic world of the shipped `shapes` model on
a noisy background, each on screen at known times (printed), noise alone in between.

    python examples/locate_shapes.py demo.mp4
    zsclip locate demo.mp4 --model shapes --text "red circle" --text "blue square" --plot curves.png
"""

from __future__ import annotations

import sys

import numpy as np

from zsclip.datasets.shapes import Scene, render
from zsclip.video import write_video

TIMELINE = [(1.0, 4.0, "red", "circle"), (5.0, 8.0, "blue", "square"), (9.0, 11.0, "green", "triangle")]
SECONDS, RATE, SIZE = 12.0, 10, 128


def main(path: str) -> None:
    rng = np.random.default_rng(0)

    def frame(t: float) -> np.ndarray:
        colour, shape = next(((c, s) for a, b, c, s in TIMELINE if a <= t < b), (None, None))
        scene = Scene(colour or "red", shape or "circle", "noisy", "grey", 0.3 if shape else 0.0, 0.5, 0.5, 0.4)
        return np.asarray(render(scene, 64, rng).resize((SIZE, SIZE)))

    write_video(path, (frame(i / RATE) for i in range(int(SECONDS * RATE))), RATE)
    for a, b, colour, shape in TIMELINE:
        print(f"{colour} {shape}: {a:g}-{b:g} s")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "demo.mp4")
