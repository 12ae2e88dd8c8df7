"""Re-classifying the same images with other classes: the image-embedding store vs encoding again, one run.

    python bench/reclassify.py [--arch ViT-B-32] [--images 1000]

Run 1 classifies the images with one class list (the store is empty: every image is decoded and encoded). Run 2
classifies the same images with another class list and templates (the store answers). Run 3 is run 2 again with
--no-store, the reference. Model loading is timed apart; each run's time covers building the classifier and
classifying every image.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

import zsclip
from zsclip.models import model_config, random_init_model, save_model_dir

FIRST = ["goldfish", "tabby cat", "golden retriever", "sports car", "pizza"]
SECOND = ["volcano", "sailboat", "castle", "espresso", "tractor", "umbrella", "zebra", "lighthouse"]


def timed_run(model, classes, templates, listing, store):
    start = time.perf_counter()
    clf = zsclip.build_classifier(model, classes, templates)
    labels = [r.label for r in zsclip.classify(model, clf, f"@{listing}", store=store)]
    return time.perf_counter() - start, labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="ViT-B-32")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/imagenet-samples"))
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    os.environ["ZSCLIP_CACHE_DIR"] = str(tmp / "cache")
    paths = sorted(p for p in Path(args.data).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    listing = tmp / "images.txt"
    listing.write_text("\n".join(map(str, paths[: args.images])))
    cfg = model_config(args.arch)
    model_dir = save_model_dir(random_init_model(cfg), cfg, tmp / "model")

    start = time.perf_counter()
    model = zsclip.load_model(str(model_dir), device="cpu")
    load_t = time.perf_counter() - start
    first_t, _ = timed_run(model, FIRST, "photo", listing, True)
    second_t, stored = timed_run(model, SECOND, "imagenet7", listing, True)
    fresh_t, fresh = timed_run(model, SECOND, "imagenet7", listing, False)
    agree = sum(a == b for a, b in zip(stored, fresh, strict=True)) / len(fresh)

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}; {args.arch} random init; "
        f"{len(fresh)} images from {args.data}; model load {load_t:.1f} s (not counted)"
    )
    print(f"{'':48}{'time s':>9}{'img/s':>10}{'speed-up':>10}")
    for name, t in (
        ("run 1: first classes, empty store", first_t),
        ("run 2: other classes + templates, store", second_t),
        ("run 3: same as run 2, --no-store", fresh_t),
    ):
        print(f"{name:48}{t:9.2f}{len(fresh) / t:10.1f}{first_t / t:10.1f}")
    print(f"labels of run 2 vs run 3: {agree:.4f} agreement")


if __name__ == "__main__":
    main()
