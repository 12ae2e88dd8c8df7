"""When does `zsclip locate` call a segment found? Measured on videos where each text is known to be present or
absent: the rule and its threshold come from here (issue 21 item 12).

    python bench/locate_found.py                 # 40 videos x 36 texts, the shipped shapes model
    python bench/locate_found.py --videos 4      # quick

Each video is 12 s of grey noise at 10 fps with 0-3 shapes of the shapes world on screen for 1.5-4 s each; every
one of the 36 colour-shape texts is asked of every video. A text is present when its composition is on screen at
some point; absent otherwise (the hard negatives included: a red square asked of a video showing a red circle).
For the best segment of each text the script prints how well candidate statistics separate present from absent
texts, and the false-positive and false-negative rates of the rule zsclip uses (zsclip.locate.found_rule).
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
    """A rule we measured and did not take: the segment's mean similarity above the median of the rest of the
    video, in robust standard deviations of the rest."""
    i, j = round(segment.start * fps), max(round(segment.start * fps) + 1, round(segment.end * fps))
    inside, outside = curve[i:j], np.concatenate([curve[:i], curve[j:]])
    if len(outside) < 3:
        return float("nan")
    centre = float(np.median(outside))
    return (float(inside.mean()) - centre) / max(1.4826 * float(np.median(np.abs(outside - centre))), 1e-4)


def make_video(path: Path, rng: np.random.Generator) -> list[tuple[float, float, str, str]]:
    from tests.videos import shapes_video
    from zsclip import shapes

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
    from zsclip import shapes
    from zsclip.locate import found_rule

    from zsclip.datasets import builtin_classnames
    from zsclip.locate import text_embeddings
    from zsclip.video import embed_video

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    model = zsclip.load_model(args.model)
    texts = [shapes.classname(c, s) for c, s in shapes.COMPOSITIONS]
    banks = {
        "z_cifar100": text_embeddings(model, builtin_classnames("cifar100"), ["a photo of a {}."]),
        "z_imagenet": text_embeddings(model, builtin_classnames("imagenet"), ["a photo of a {}."]),
        "z_shapes": text_embeddings(model, texts, "shapes"),
    }
    rng = np.random.default_rng(0)
    rows = []  # (present, contrast, score, found, related)
    for v in range(args.videos):
        path = work / f"video{v:03d}.mp4"
        timeline = make_video(path, rng)
        shown = {shapes.classname(c, s) for _, _, c, s in timeline}
        colours, kinds = {c for _, _, c, _ in timeline}, {s for _, _, _, s in timeline}
        result = zsclip.locate(model, path, texts, fps=args.fps, templates="shapes")
        frames = embed_video(model, str(path), args.fps)
        feats = np.nan_to_num(frames.features)
        zs = {}
        for bank_name, bank in banks.items():
            sims = bank @ feats.T  # [bank, m]
            zs[bank_name] = (result.curves - sims.mean(0)) / sims.std(0)
        for t, ((colour, shape), text) in enumerate(zip(shapes.COMPOSITIONS, texts, strict=True)):
            segment = next(s for s in result.segments if s.text == text)
            related = colour in colours or shape in kinds  # shares a colour or a shape with what is on screen
            i, j = (
                round(segment.start * args.fps),
                max(round(segment.start * args.fps) + 1, round(segment.end * args.fps)),
            )
            extra = {k: float(np.nanmean(z[t, i:j])) for k, z in zs.items()}
            rows.append((text in shown, contrast(result.curves[t], result.fps, segment), segment.score, segment.found,
                         related, extra))  # fmt: skip
    present = np.array([r[0] for r in rows])
    related = np.array([r[4] for r in rows]) & ~present
    stats = {"contrast": np.array([r[1] for r in rows]), "score": np.array([r[2] for r in rows])}
    for k in banks:
        stats[k] = np.array([r[5][k] for r in rows])
    load = os.getloadavg()[0]
    print(f"{args.videos} videos, {len(texts)} texts each: {present.sum()} present, {(~present).sum()} absent "
          f"(model {args.model}, --fps {args.fps:g}, load average {load:.1f})")  # fmt: skip
    print(f"{'statistic':<10} {'present: min / p5 / median':>30} {'absent: median / p95 / max':>30} {'best cut':>9} "
          f"{'accuracy':>9}")  # fmt: skip
    for name, values in stats.items():
        p, a = values[present], values[~present]
        cuts = np.unique(values)
        accuracy = [((values >= c) == present).mean() for c in cuts]
        best = cuts[int(np.argmax(accuracy))]
        print(f"{name:<10} {p.min():>10.3f} {np.percentile(p, 5):>9.3f} {np.median(p):>9.3f} "
              f"{np.median(a):>10.3f} {np.percentile(a, 95):>9.3f} {a.max():>9.3f} {best:>9.3f} {max(accuracy):>9.1%}")  # fmt: skip
    found = np.array([r[3] for r in rows])
    unrelated = ~present & ~related
    print(f"absent texts sharing no colour and no shape with what is on screen: {unrelated.sum()}; contrast median "
          f"{np.median(stats['contrast'][unrelated]):.2f}, p95 {np.percentile(stats['contrast'][unrelated], 95):.2f}, "
          f"max {stats['contrast'][unrelated].max():.2f}")  # fmt: skip
    print(f"absent texts sharing a colour or a shape (a red square while a red circle shows): {related.sum()}; "
          f"contrast median {np.median(stats['contrast'][related]):.2f}, p95 "
          f"{np.percentile(stats['contrast'][related], 95):.2f}")  # fmt: skip
    rate = lambda mask: f"{(found & mask).sum()} of {mask.sum()} ({(found & mask).sum() / max(mask.sum(), 1):.1%})"  # noqa: E731
    print(f"zsclip's rule ({found_rule()}): found for present {rate(present)}; for unrelated absent "
          f"{rate(unrelated)}; for related absent {rate(related)}")  # fmt: skip
    for name in banks:
        c = stats[name]
        print(f"{name}: present min {c[present].min():.2f} p5 {np.percentile(c[present], 5):.2f}; unrelated absent "
              f"p95 {np.percentile(c[unrelated], 95):.2f} max {c[unrelated].max():.2f}; related absent p95 "
              f"{np.percentile(c[related], 95):.2f} max {c[related].max():.2f}")  # fmt: skip
    for k in (1.5, 1.75, 2.0, 2.25, 2.5, 3.0):
        c = stats["z_imagenet"]
        print(f"  z_imagenet >= {k:>4}: present {((c >= k) & present).sum() / present.sum():.1%}, unrelated absent "
              f"{((c >= k) & unrelated).sum() / unrelated.sum():.1%}, related absent "
              f"{((c >= k) & related).sum() / related.sum():.1%}")  # fmt: skip
    for k in (3, 4, 5, 6, 8, 10):
        c = stats["contrast"]
        print(f"  contrast >= {k:>2}: present {((c >= k) & present).sum() / present.sum():.1%}, unrelated absent "
              f"{((c >= k) & unrelated).sum() / unrelated.sum():.1%}, related absent "
              f"{((c >= k) & related).sum() / related.sum():.1%}")  # fmt: skip


if __name__ == "__main__":
    main()
