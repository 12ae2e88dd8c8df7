"""End-to-end zero-shot evaluation on the CPU: zsclip vs CLIP_benchmark, same model, images and machine, one run.

    pip install -e ".[bench]" && python bench/cpu_vs_clip_benchmark.py [--arch ViT-B-32]

Data: ../shared/data/imagenet-samples (1000 ImageNet-size photos, one per class) laid out as CLIP_benchmark's
`imagenet1k-unverified` expects (ROOT/val/<wnid>/*, symlinks). Both classify into the 1000 ImageNet classes with
one template ("a photo of a {c}.") and the same random-init model. CLIP_benchmark runs its own pipeline
(build_dataset, zero_shot_classifier, run_classification) with amp off, its fastest setting on a CPU (its default
bf16 autocast is several times slower here); its accuracy() is not called because it fails with numpy >= 2.3
after all the work is done. zsclip runs `evaluate` with the image store off, so both encode every image.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import open_clip
import torch

import zsclip
from zsclip.evaluate.run import evaluate
from zsclip.models import model_config, random_init_model, save_model_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="ViT-B-32")
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/imagenet-samples"))
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2, help="CLIP_benchmark's DataLoader workers")
    args = parser.parse_args()
    from clip_benchmark.datasets.builder import build_dataset, get_dataset_collate_fn
    from clip_benchmark.metrics import zeroshot_classification as zsc

    tmp = Path(tempfile.mkdtemp())
    os.environ["ZSCLIP_CACHE_DIR"] = str(tmp / "cache")
    root = tmp / "imagenet"
    (root / "val").mkdir(parents=True)
    for wnid in sorted(p for p in Path(args.data).iterdir() if p.is_dir()):
        (root / "val" / wnid.name).symlink_to(wnid.resolve(), target_is_directory=True)
    cfg = model_config(args.arch)
    model_dir = save_model_dir(random_init_model(cfg), cfg, tmp / "model")

    start = time.perf_counter()
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{model_dir}")
    model.eval()
    tokenizer = open_clip.get_tokenizer(f"local-dir:{model_dir}")
    dataset = build_dataset("imagenet1k-unverified", root=str(root), split="test", transform=preprocess)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=args.batch_size, num_workers=args.workers,
        collate_fn=get_dataset_collate_fn("imagenet1k-unverified"),
    )  # fmt: skip
    classifier = zsc.zero_shot_classifier(model, tokenizer, dataset.classes, ["a photo of a {c}."], "cpu", amp=False)
    text_t = time.perf_counter() - start
    logits, target = zsc.run_classification(model, classifier, loader, "cpu", amp=False)
    theirs_t = time.perf_counter() - start
    theirs = logits.argmax(1)

    start = time.perf_counter()
    clip = zsclip.load_model(str(model_dir), device="cpu")
    result = evaluate(clip, str(root / "val"), ["a photo of a {}."], classnames="imagenet", store=False,
                      batch_size=args.batch_size)  # fmt: skip
    ours_t = time.perf_counter() - start
    ours = torch.from_numpy(result.topk[:, 0])
    n = len(target)
    agree = (ours == theirs).float().mean().item()
    acc_theirs = (theirs == target).float().mean().item()

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}; {args.arch} random init; "
        f"{n} images, 1000 classes, 1 template, batch {args.batch_size}"
    )
    print(f"{'':34}{'time s':>9}{'img/s':>9}{'ratio':>8}{'acc1':>8}")
    print(
        f"{'CLIP_benchmark (amp off)':34}{theirs_t:9.1f}{n / theirs_t:9.2f}{1:8.2f}{acc_theirs:8.4f}"
        f"   (text {text_t:.0f} s)"
    )
    print(
        f"{'zsclip evaluate (store off)':34}{ours_t:9.1f}{n / ours_t:9.2f}{theirs_t / ours_t:8.2f}"
        f"{result.metrics['acc1']:8.4f}"
    )
    print(f"top-1 agreement: {agree:.4f}")


if __name__ == "__main__":
    main()
