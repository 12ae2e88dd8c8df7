"""JPEG draft decoding vs exact decoding on real photos: top-1 agreement, embedding cosine and speed, one run.

    python bench/draft_agreement.py [--arch ViT-B-32] [--data ../shared/data/imagenet-samples]

Both passes classify the same images into the 1000 ImageNet classes with the same model ("a photo of a {}."), one
with Pillow's draft mode for large JPEGs (zsclip's default) and one with --exact-preprocess. The image store is
off so both passes decode and encode every image.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

import zsclip
from zsclip.engines import ReadOptions, embed_stream
from zsclip.models import model_config, random_init_model, save_model_dir
from zsclip.pipeline.encode import draft_size
from zsclip.pipeline.images import load_image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="ViT-B-32")
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/imagenet-samples"))
    parser.add_argument("--images", type=int, default=None, help="the first N images (default: all)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    os.environ["ZSCLIP_CACHE_DIR"] = str(tmp / "cache")
    paths = sorted(str(p) for p in Path(args.data).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    paths = paths[: args.images]
    cfg = model_config(args.arch)
    model = zsclip.load_model(str(save_model_dir(random_init_model(cfg), cfg, tmp / "m")), device="cpu")
    clf = zsclip.build_classifier(model, list(IMAGENET_CLASSNAMES), "photo")
    sources = [(p, True) for p in paths]

    decode = {}
    for name, draft in (("exact", None), ("draft", draft_size(model))):
        start = time.perf_counter()
        for p in paths:
            load_image(p, model.preprocess.geometry, draft)
        decode[name] = time.perf_counter() - start

    feats, timing = {}, {}
    for name, exact in (("exact", True), ("draft", False)):
        start = time.perf_counter()
        batches = list(embed_stream(model, sources, ReadOptions(store=False, exact=exact)))
        timing[name] = time.perf_counter() - start
        feats[name] = torch.from_numpy(np.concatenate([b.features for b in batches if b.features is not None]))
    top1 = {k: (v @ torch.from_numpy(clf.weights).T).argmax(-1) for k, v in feats.items()}
    agree = (top1["exact"] == top1["draft"]).float().mean().item()
    cosine = torch.nn.functional.cosine_similarity(feats["exact"], feats["draft"], dim=-1)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}; {args.arch} random init; "
        f"{len(paths)} images from {args.data}; draft target {draft_size(model)} px"
    )
    print(f"{'':10}{'decode+preprocess s':>21}{'end-to-end s':>14}{'img/s':>8}")
    for name in ("exact", "draft"):
        print(f"{name:10}{decode[name]:21.1f}{timing[name]:14.1f}{len(paths) / timing[name]:8.1f}")
    print(
        f"decode speed-up {decode['exact'] / decode['draft']:.2f}x, end-to-end {timing['exact'] / timing['draft']:.2f}x"
    )
    print(
        f"top-1 agreement (1000 ImageNet classes): {agree:.4f}; embedding cosine min {cosine.min():.5f}, "
        f"mean {cosine.mean():.5f}"
    )


if __name__ == "__main__":
    main()
