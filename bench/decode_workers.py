"""zsclip's supervised decoding workers vs torch's DataLoader on the same files, preprocessing and worker count,
one run: images per second and the ratio.

    python bench/decode_workers.py [--data ../shared/data/imagenet-samples] [--workers 1] [--size 224]

The supervision (a per-file heartbeat, replacing a worker that dies or stalls) and sending batches as bytes
through a pipe (not /dev/shm) must not cost throughput. Decoding only: no model runs. Each side runs twice,
alternating, and its best time counts.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import open_clip
import torch
from classify_vs_open_clip import Files  # bench/ is on sys.path when a script in it runs

from zsclip.pipeline.images import SkipFile, iter_batches, load_image


def _load(path, preprocess):
    try:
        return load_image(path, preprocess)
    except SkipFile:
        return torch.zeros(3, 1, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/imagenet-samples"))
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--images", type=int, default=None, help="the first N images (default: all)")
    args = parser.parse_args()
    paths = sorted(str(p) for p in Path(args.data).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    paths = paths[: args.images]
    preprocess = open_clip.image_transform(args.size, is_train=False)
    sources = [(p, True) for p in paths]

    def ours() -> int:
        return sum(len(b.paths) for b in iter_batches(sources, preprocess, batch_size=args.batch_size,
                                                      workers=args.workers, store=None))  # fmt: skip

    def dataloader() -> int:
        loader = torch.utils.data.DataLoader(Files(paths, preprocess, _load), batch_size=args.batch_size,
                                             num_workers=args.workers)  # fmt: skip
        return sum(len(b) for b in loader)

    best = {"zsclip": float("inf"), "DataLoader": float("inf")}
    for _ in range(2):
        for name, fn in (("zsclip", ours), ("DataLoader", dataloader)):
            start = time.perf_counter()
            n = fn()
            best[name] = min(best[name], time.perf_counter() - start)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}")
    print(f"{len(paths)} files from {args.data}, {args.size} px, batch {args.batch_size}, {args.workers} worker(s)")
    for name, t in best.items():
        print(f"{name:>10}: {t:6.2f} s  {n / t:8.1f} img/s")
    print(f"ratio zsclip / DataLoader throughput: {best['DataLoader'] / best['zsclip']:.2f}x")


if __name__ == "__main__":
    main()
