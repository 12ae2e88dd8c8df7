"""Gallery at scale: N classify records (real CIFAR-10 PNGs from ../shared/data, reused in turn, or generated
ones) through zsclip.classify.gallery.Gallery; prints the rate of add(), the time of close(), peak memory and what was
written. Usage: python bench/gallery_scale.py [--n 100000] [--labels 100] [--out DIR]"""

from __future__ import annotations

import argparse
import random
import resource
import shutil
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from zsclip.classify.gallery import Gallery

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-test"


def images(tmp: Path) -> list[str]:
    if DATA.is_dir():
        return [str(p) for p in sorted(DATA.rglob("*.png"))]
    from PIL import Image

    out = []
    for i in range(200):
        path = tmp / f"{i}.png"
        Image.new("RGB", (32, 32), (i, 255 - i, 90)).save(path)
        out.append(str(path))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--labels", type=int, default=100)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="zsclip-gallery-bench-"))
    out = args.out or tmp / "report"
    files = images(tmp)
    rng = random.Random(0)
    names = [f"class {i}" for i in range(args.labels)]
    weights = [1 / (i + 1) for i in range(args.labels)]  # a long tail, as real label counts have
    # what zsclip and PIL cost before the first record: the baseline of the peak below
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    gallery = Gallery(out)
    for i in range(args.n):
        label = rng.choices(names, weights)[0]
        prob = rng.random()
        top = [{"label": label, "prob": prob}, {"label": names[0], "prob": (1 - prob) / 2}]
        # each record its own path; the pixels come from the real files in turn
        record = SimpleNamespace(path=f"photos/{i:07d}.png", label=label, prob=prob, top_k=top, abstained=prob < 0.05)
        gallery.add(record, image=files[i % len(files)])
    added = time.perf_counter() - start
    index = gallery.close()
    closed = time.perf_counter() - start - added
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    pages = list((out / "pages").glob("*.html")) if (out / "pages").exists() else []
    thumbs = sum(1 for _ in (out / "thumbs").rglob("*.jpg"))
    print("| images | add() rate | close() | peak RSS (after imports) | gallery.html | label pages | thumbnails |")
    print("|---|---|---|---|---|---|---|")
    print(
        f"| {args.n:,} | {args.n / added:,.0f} img/s | {closed:.1f} s | {rss:,.0f} MiB ({base:,.0f}) | "
        f"{index.stat().st_size / 1024:,.0f} KiB | {len(pages):,} | {thumbs:,} |"
    )
    if args.out is None:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
