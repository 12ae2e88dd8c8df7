"""Start-up and whole-process times of the `zsclip` command, against the issue-13 targets, in one run.

    python bench/startup.py [--images 1000] [--data ../shared/data/imagenet-samples]

Every time is a whole process (`python -m zsclip ...` in a subprocess), best of --repeat for the quick ones. The
model is ViT-B-32 in random init saved as a local checkpoint (ARCH:/path/file.safetensors). The last row compares
end-to-end `classify --no-store` with the bare fp32 `encode_image` rate on tensors decoded beforehand, measured in
this same run, on the same images and threads.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def zsclip(*args: str, env: dict) -> float:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "zsclip", *args], env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode not in (0, 2):
        raise SystemExit(f"zsclip {' '.join(args)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return elapsed


def best(n: int, *args: str, env: dict) -> float:
    return min(zsclip(*args, env=env) for _ in range(n))


def bare_encode_rate(weights: Path, paths: list[Path], batch_size: int) -> float:
    """Images per second of fp32 encode_image alone, on tensors preprocessed before the clock starts."""
    import open_clip
    import torch
    from PIL import Image

    model, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32", pretrained=str(weights))
    model.eval()
    pixels = torch.stack([preprocess(Image.open(p).convert("RGB")) for p in paths])
    with torch.inference_mode():
        model.encode_image(pixels[:batch_size])  # warm-up
        start = time.perf_counter()
        for i in range(0, len(pixels), batch_size):
            model.encode_image(pixels[i : i + batch_size])
    return len(paths) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data/imagenet-samples"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    import torch

    from zsclip.models import model_config, random_init_model

    paths = sorted(p for p in Path(args.data).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    paths = paths[: args.images]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = {**os.environ, "ZSCLIP_CACHE_DIR": str(tmp / "cache"), "PYTHONWARNINGS": "ignore"}
        torch.manual_seed(0)
        weights = tmp / "vitb32.safetensors"
        from safetensors.torch import save_file

        model = random_init_model(model_config("ViT-B-32-quickgelu"), 0)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, weights)
        del model
        spec = f"ViT-B-32-quickgelu:{weights}"
        listing = tmp / "images.txt"
        listing.write_text("\n".join(map(str, paths)))
        new = tmp / "new"
        new.mkdir()
        (new / "one.jpg").symlink_to(paths[0])
        common = ["--classes", "goldfish,tabby cat,sports car,pizza", "-m", spec, "-t", "photo", "-f", "jsonl", "-q"]

        rows.append(("zsclip --help", best(args.repeat, "--help", env=env), 0.5))
        rows.append(("zsclip classify --help", best(args.repeat, "classify", "--help", env=env), 0.5))
        rows.append(("zsclip --version", best(args.repeat, "--version", env=env), 0.5))
        rows.append(("zsclip prompts list", best(args.repeat, "prompts", "list", env=env), 0.5))
        rows.append(("zsclip prompts show photo", best(args.repeat, "prompts", "show", "photo", env=env), 0.5))
        rows.append(("zsclip cache path", best(args.repeat, "cache", "path", env=env), 0.5))
        rows.append(
            ("usage error: --classes ''", best(args.repeat, "classify", "x.jpg", "--classes", "", env=env), 0.5)
        )
        rows.append(
            ("usage error: --top-k 0", best(args.repeat, "classify", str(new), *common, "--top-k", "0", env=env), 0.5)
        )

        first = zsclip("classify", f"@{listing}", *common, env=env)
        rows.append((f"first run, {len(paths)} images (fills the store)", first, None))
        rerun = min(zsclip("classify", f"@{listing}", *common, "--threshold", str(t), env=env) for t in (0.3, 0.4))
        rows.append((f"fully cached rerun, {len(paths)} images, new --threshold", rerun, 2.5))
        rows.append(("cache info", best(args.repeat, "cache", "info", env=env), 0.5))
        one = zsclip("classify", str(new / "one.jpg"), *common, "--no-store", env=env)
        rows.append(("one new image, cached text, local ViT-B-32", one, 5.0))

        e2e = zsclip("classify", f"@{listing}", *common, "--no-store", "--batch-size", str(args.batch_size), env=env)
        bare = bare_encode_rate(weights, paths, args.batch_size)

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"python {platform.python_version()}; {len(paths)} images from {args.data}"
    )
    print(f"{'':58}{'time s':>9}{'target s':>10}  met")
    for name, t, target in rows:
        met = "" if target is None else ("yes" if t <= target else "NO")
        print(f"{name:58}{t:9.2f}{'' if target is None else f'{target:10.1f}':>10}  {met}")
    ours = len(paths) / e2e
    print(
        f"end-to-end classify --no-store: {ours:.1f} img/s (whole process, {e2e:.1f} s); bare fp32 encode_image "
        f"on pre-decoded tensors: {bare:.1f} img/s; ratio {ours / bare:.2f} (target >= 0.9)"
    )


if __name__ == "__main__":
    main()
