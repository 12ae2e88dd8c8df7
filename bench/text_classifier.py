"""Building the zero-shot classifier: zsclip (length-trimmed, deduplicated, cached) vs open_clip, same run.

    python bench/text_classifier.py [--arch ViT-B-32] [--classes 20] [--cached-classes 1000]

1. open_clip.build_zero_shot_classifier vs zsclip.build_classifier (cold cache) on CLASSES ImageNet names x the
   80 CLIP templates, same random-init model: time, ratio, min cosine per class.
2. A cached rebuild of CACHED_CLASSES x 80 templates (vectors already in the cache): time. The cache is filled by
   a model with the same 512-d embedding and a one-layer text tower, since only the cache path is timed here.
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
from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES, OPENAI_IMAGENET_TEMPLATES

import zsclip
from zsclip.models import model_config, random_init_model, save_model_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="ViT-B-32")
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--cached-classes", type=int, default=1000)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    os.environ["ZSCLIP_CACHE_DIR"] = str(tmp / "cache")
    classes = list(IMAGENET_CLASSNAMES[: args.classes])

    cfg = model_config(args.arch)
    model_dir = save_model_dir(random_init_model(cfg), cfg, tmp / "model")
    ref_model = open_clip.create_model(f"local-dir:{model_dir}").eval()
    tokenizer = open_clip.get_tokenizer(f"local-dir:{model_dir}")
    start = time.perf_counter()
    with torch.no_grad():
        reference = open_clip.build_zero_shot_classifier(ref_model, tokenizer, classes, OPENAI_IMAGENET_TEMPLATES).T
    ref_t = time.perf_counter() - start

    model = zsclip.load_model(str(model_dir), device="cpu")
    start = time.perf_counter()
    ours = zsclip.build_classifier(model, classes, "imagenet80")
    our_t = time.perf_counter() - start
    cosine = torch.nn.functional.cosine_similarity(torch.from_numpy(ours.weights), reference, dim=-1).min().item()

    small = dict(cfg, text_cfg=dict(cfg["text_cfg"], layers=1))
    small_dir = save_model_dir(random_init_model(small), small, tmp / "small")
    small_model = zsclip.load_model(str(small_dir), device="cpu")
    many = list(IMAGENET_CLASSNAMES[: args.cached_classes])
    start = time.perf_counter()
    zsclip.build_classifier(small_model, many, "imagenet80")
    fill_t = time.perf_counter() - start
    start = time.perf_counter()
    rebuilt = zsclip.build_classifier(small_model, many, "imagenet80")
    cached_t = time.perf_counter() - start

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}; {args.arch} random init"
    )
    print(f"{'':44}{'time s':>9}{'ratio':>8}")
    print(f"{f'open_clip build_zero_shot_classifier {len(classes)}x80':44}{ref_t:9.1f}{1:8.2f}")
    print(f"{f'zsclip build_classifier {len(classes)}x80 (cold cache)':44}{our_t:9.1f}{ref_t / our_t:8.2f}")
    print(f"min cosine per class vs open_clip: {cosine:.7f}")
    print(f"{f'zsclip fill cache {len(many)}x80, 1-layer text tower':44}{fill_t:9.1f}")
    print(f"{f'zsclip cached rebuild {len(many)}x80':44}{cached_t:9.2f}   (encoded {rebuilt.encoded_prompts} prompts)")


if __name__ == "__main__":
    main()
