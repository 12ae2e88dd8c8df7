"""When does `zsclip locate` call a segment found? Measured on videos where each text is known to be present or
absent: the rule and its threshold come from here (issue 21 item 12).

    python bench/locate_found.py                 # 40 videos x 36 texts, the shipped shapes model
    python bench/locate_found.py --videos 4      # quick

Each video is 12 s of grey noise at 10 fps with 0-3 shapes of the shapes world on screen for 1.5-4 s each; every
one of the 36 colour-shape texts is asked of every video. A text is present when its composition is on screen;
absent otherwise, split into unrelated texts (no colour and no shape in common with what is on screen) and
related ones (a red square asked of a video showing a red circle: the hard case). For the best segment of each
text the script prints three statistics, each as the share of present / unrelated / related texts it would call
found at a few cuts:

- contrast: the segment's mean similarity above the median of the rest of the video, in robust standard
  deviations of the rest (a rule we measured and did not take: any shape on screen lifts every text about shapes);
- strength: the text's similarity to each frame in standard deviations above the frame's mean similarity to a
  reference bank of 1,000 everyday concepts (ImageNet class names), averaged over the segment (zsclip's rule);
- score: the mean cosine itself (separates well for one model, but its scale is the model's: --min-score).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def contrast(curve: np.ndarray, fps: float, segment) -> float:
    i, j = round(segment.start * fps), max(round(segment.start * fps) + 1, round(segment.end * fps))
    inside, outside = curve[i:j], np.concatenate([curve[:i], curve[j:]])
    if len(outside) < 3:
        return float("nan")
    centre = float(np.median(outside))
    return (float(inside.mean()) - centre) / max(1.4826 * float(np.median(np.abs(outside - centre))), 1e-4)


def make_video(path: Path, rng: np.random.Generator) -> list[tuple[float, float, str, str]]:
    from tests.videos import shapes_video
    from zsclip.datasets import shapes

    timeline, t = [], rng.uniform(0.5, 2.0)
    for _ in range(int(rng.integers(0, 4))):
        length = rng.uniform(1.5, 4.0)
        if t + length > 11.5:
            break
        colour, shape = shapes.COMPOSITIONS[int(rng.integers(len(shapes.COMPOSITIONS)))]
        timeline.append((t, t + length, colour, shape))
        t += length + rng.uniform(0.5, 2.0)
    shapes_video(path, timeline, seconds=12.0, rate=10.0)
    return timeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=40)
    parser.add_argument("--fps", type=float, default=2.0)
    parser.add_argument("--model", default="shapes")
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "zsclip-bench-locate-found"))
    args = parser.parse_args()

    import zsclip
    from zsclip.datasets import shapes
    from zsclip.video.locate import FOUND_Z, found_rule

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    model = zsclip.load_model(args.model)
    texts = [shapes.classname(c, s) for c, s in shapes.COMPOSITIONS]
    rng = np.random.default_rng(0)
    present, related, stats, found = [], [], {"contrast": [], "strength": [], "score": []}, []
    for v in range(args.videos):
        path = work / f"video{v:03d}.mp4"
        timeline = make_video(path, rng)
        shown = {shapes.classname(c, s) for _, _, c, s in timeline}
        colours, kinds = {c for _, _, c, _ in timeline}, {s for _, _, _, s in timeline}
        result = zsclip.locate(model, path, texts, fps=args.fps, templates="shapes")
        for t, ((colour, shape), text) in enumerate(zip(shapes.COMPOSITIONS, texts, strict=True)):
            segment = next(s for s in result.segments if s.text == text)
            present.append(text in shown)
            related.append(text not in shown and (colour in colours or shape in kinds))
            stats["contrast"].append(contrast(result.curves[t], result.fps, segment))
            stats["strength"].append(segment.strength)
            stats["score"].append(segment.score)
            found.append(segment.found)
    present, related, found = np.array(present), np.array(related), np.array(found)
    unrelated = ~present & ~related
    groups = {"present": present, "unrelated absent": unrelated, "related absent": related}
    print(f"{args.videos} videos x {len(texts)} texts, model {args.model}, --fps {args.fps:g}: "
          + ", ".join(f"{name} {mask.sum()}" for name, mask in groups.items())
          + f" (load average {os.getloadavg()[0]:.1f})")  # fmt: skip
    cuts = {"contrast": (3, 4, 6, 10), "strength": (1.5, FOUND_Z, 2.5, 3.0), "score": (0.45, 0.55, 0.6, 0.64)}
    for name, values in stats.items():
        values = np.array(values)
        print(f"{name}: present min {np.nanmin(values[present]):.2f}; unrelated absent p95 "
              f"{np.nanpercentile(values[unrelated], 95):.2f} max {np.nanmax(values[unrelated]):.2f}")  # fmt: skip
        for cut in cuts[name]:
            shares = ", ".join(f"{g} {((values >= cut) & m).sum() / max(m.sum(), 1):.1%}" for g, m in groups.items())
            print(f"  {name} >= {cut:g}: found for {shares}")
    shares = ", ".join(f"{g} {(found & m).sum()} of {m.sum()} ({(found & m).sum() / max(m.sum(), 1):.1%})"
                       for g, m in groups.items())  # fmt: skip
    print(f"zsclip's rule ({found_rule()}): found for {shares}")


if __name__ == "__main__":
    main()
