"""End-to-end on a CUDA GPU: zsclip (batched nvjpeg decode + GPU preprocessing, bf16) vs CLIP_benchmark (PIL in
DataLoader workers, its default amp), same model and JPEGs, one run.

    pip install -e ".[bench]" && python bench/gpu_end_to_end.py [--images 20000] [--arch ViT-B-32]

Generates ImageNet-size JPEGs (500x375, quality 90) with shapes and noise, laid out as CLIP_benchmark's
imagenet1k-unverified folder with 1000 classes. Exits with a message when no GPU is present.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import open_clip
import torch
from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES
from PIL import Image, ImageDraw

import zsclip
from zsclip.evaluate.run import evaluate
from zsclip.models import model_config, random_init_model, save_model_dir


def make_jpegs(root: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / "val" / f"n{i % 1000:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        base = rng.integers(0, 255, (375 // 5, 500 // 5, 3), dtype=np.uint8)
        im = Image.fromarray(base).resize((500, 375), Image.BILINEAR)
        ImageDraw.Draw(im).ellipse([100, 80, 100 + i % 250, 80 + i % 200], fill=tuple(rng.integers(0, 255, 3)))
        im.save(folder / f"{i:06d}.JPEG", quality=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="ViT-B-32")
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=1024)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU here: run this on a GPU machine")
    from clip_benchmark.datasets.builder import build_dataset, get_dataset_collate_fn
    from clip_benchmark.metrics import zeroshot_classification as zsc

    tmp = Path(tempfile.mkdtemp())
    os.environ["ZSCLIP_CACHE_DIR"] = str(tmp / "cache")
    make_jpegs(tmp / "data", args.images)
    cfg = model_config(args.arch)
    model_dir = save_model_dir(random_init_model(cfg), cfg, tmp / "model")
    classes = list(IMAGENET_CLASSNAMES)

    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{model_dir}", device="cuda")
    model.eval()
    tokenizer = open_clip.get_tokenizer(f"local-dir:{model_dir}")
    classifier = zsc.zero_shot_classifier(model, tokenizer, classes, ["a photo of a {c}."], "cuda", amp=True)
    dataset = build_dataset("imagenet1k-unverified", root=str(tmp / "data"), split="test", transform=preprocess)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=args.batch_size, num_workers=os.cpu_count(), pin_memory=True,
        collate_fn=get_dataset_collate_fn("imagenet1k-unverified"),
    )  # fmt: skip
    torch.cuda.synchronize()
    start = time.perf_counter()
    logits, _ = zsc.run_classification(model, classifier, loader, "cuda", amp=True)
    theirs_t = time.perf_counter() - start

    clip = zsclip.load_model(str(model_dir), device="cuda")
    zsclip.build_classifier(clip, classes, ["a photo of a {}."])  # text is not what is timed here
    torch.cuda.synchronize()
    start = time.perf_counter()
    result = evaluate(clip, str(tmp / "data" / "val"), ["a photo of a {}."], classnames="imagenet", store=False,
                      batch_size=args.batch_size)  # fmt: skip
    torch.cuda.synchronize()
    ours_t = time.perf_counter() - start
    n = len(result.paths)
    agree = (torch.from_numpy(result.topk[:, 0]) == logits.argmax(1)).float().mean().item()
    print(
        f"machine: {torch.cuda.get_device_name()}, {os.cpu_count()} CPU cores, {platform.machine()}, "
        f"torch {torch.__version__}; {args.arch} random init, bf16; {n} JPEGs 500x375"
    )
    print(f"{'':36}{'time s':>9}{'img/s':>10}{'ratio':>8}")
    print(f"{'CLIP_benchmark (amp, PIL workers)':36}{theirs_t:9.1f}{n / theirs_t:10.0f}{1:8.2f}")
    print(f"{'zsclip (nvjpeg + GPU preprocess)':36}{ours_t:9.1f}{n / ours_t:10.0f}{theirs_t / ours_t:8.2f}")
    print(f"top-1 agreement: {agree:.4f}")


if __name__ == "__main__":
    main()
