"""Memory while classifying a large folder: resident memory after 10,000 and after 100,000 images, one run.

    python bench/memory_flat.py [--images 100000] [--model tiny-vit]

Writes N small PNGs into a temporary folder, classifies them in streaming mode with a small random-init model
(the image store on, as by default), and reads the resident set size (VmRSS, main process plus decoding workers)
at 10% and at 100% of the images. Target: under 300 MB growth from 10k to 100k images.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import zsclip
from zsclip.models import model_config, random_init_model, save_model_dir


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def tree_rss_mb() -> float:
    """This process and its children (the DataLoader workers)."""
    me = os.getpid()
    children = [int(p) for p in Path(f"/proc/{me}/task/{me}/children").read_text().split()]
    return rss_mb(me) + sum(rss_mb(c) for c in children)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--model", default="tiny-vit")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    os.environ["ZSCLIP_CACHE_DIR"] = str(tmp / "cache")
    folder = tmp / "images"
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for i in range(args.images):
        sub = folder / f"{i // 1000:03d}"
        if i % 1000 == 0:
            sub.mkdir(parents=True)
        pixels = np.full((24, 24, 3), rng.integers(0, 255, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(sub / f"{i:06d}.png", compress_level=1)
    made = time.perf_counter() - start

    cfg = model_config(args.model)
    model = zsclip.load_model(str(save_model_dir(random_init_model(cfg), cfg, tmp / "m")), device="cpu")
    clf = zsclip.build_classifier(model, ["red", "green", "blue", "grey"], "photo")
    marks = {}
    start = time.perf_counter()
    n = 0
    for _ in zsclip.classify(model, clf, folder, batch_size=64):
        n += 1
        if n in (args.images // 10, args.images):
            marks[n] = tree_rss_mb()
    elapsed = time.perf_counter() - start
    first, last = marks[args.images // 10], marks[args.images]
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}; model {args.model}; "
        f"{args.images} PNGs (24x24) written in {made:.0f} s"
    )
    print(f"classified {n} images in {elapsed:.0f} s ({n / elapsed:.0f} img/s)")
    print(
        f"RSS (main + workers) after {args.images // 10}: {first:.0f} MB; after {args.images}: {last:.0f} MB; "
        f"growth {last - first:+.0f} MB"
    )
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
