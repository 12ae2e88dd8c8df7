"""CPU speed of the backends (issue 18): end-to-end `zsclip classify --no-store` per backend, and a text build.

    python bench/cpu_backends.py                          # ViT-B-32 (random init) and the shipped model
    python bench/cpu_backends.py --limit 200 --text-classes 50   # a quick check

For each model and backend, one untimed `zsclip classify` on a few images makes the ONNX export and caches the
prompts; then the timed run classifies `--limit` ImageNet-size JPEGs from ../shared/data/imagenet-samples with
`--no-store` (process start, model load, decoding and encoding all counted), and its labels are compared with
torch's. The text build encodes `--text-classes` ImageNet class names x the 80 `imagenet80` templates with no
cache, in this process. All runs share one cache directory under --workdir; ratios are against torch in the
same run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
IMAGES = REPO.parent / "shared" / "data" / "imagenet-samples"
BACKENDS = ("torch", "onnx", "onnx-int8")
CLASSES = "tench,goldfish,shark,hen,ostrich,frog,turtle,snake,spider,dog"


def zsclip(args: list[str], env: dict) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "zsclip", *args], env=env, capture_output=True, text=True, check=False, cwd=REPO
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"zsclip {' '.join(args)} failed: {done.stderr.strip()[-500:]}")
    return seconds, done.stdout


def records(stdout: str) -> dict[str, tuple[str, float]]:
    rows = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    return {r["path"]: (r["label"], r["prob"]) for r in rows}


def classify_runs(spec: str, name: str, list_file: Path, few: Path, env: dict) -> list[dict]:
    rows, reference = [], None
    for backend in BACKENDS:
        common = ["classify", "-m", spec, "-c", CLASSES, "-t", "photo", "-f", "jsonl", "-q", "--backend", backend]
        zsclip([*common, f"@{few}"], env)  # export and prompt cache, not timed
        seconds, out = zsclip([*common, "--no-store", f"@{list_file}"], env)
        got = records(out)
        reference = reference or got
        same = [p for p in reference if got[p][0] == reference[p][0]]
        diff = max(abs(got[p][1] - reference[p][1]) for p in same) if same else float("nan")
        rows.append(
            {"model": name, "backend": backend, "images": len(got), "seconds": seconds, "agree": len(same) / len(got),
             "max_top1_prob_diff": diff}
        )  # fmt: skip
        print(f"  classify {name} {backend}: {seconds:.1f} s", file=sys.stderr, flush=True)
    return rows


def text_builds(spec: str, name: str, classes: list[str]) -> list[dict]:
    from zsclip.backends import use_backend
    from zsclip.models import load_model
    from zsclip.text import build_classifier

    rows, reference = [], None
    for backend in BACKENDS:
        model = use_backend(load_model(spec, device="cpu"), backend)
        build_classifier(model, classes[:2], "imagenet80", use_cache=False)  # warm-up: sessions, kernels
        start = time.perf_counter()
        clf = build_classifier(model, classes, "imagenet80", use_cache=False)
        seconds = time.perf_counter() - start
        reference = clf.weights if reference is None else reference
        cosine = float((clf.weights * reference).sum(-1).min())
        rows.append({"model": name, "backend": backend, "prompts": len(classes) * 80, "seconds": seconds,
                     "min_class_cosine": cosine})  # fmt: skip
        print(f"  text build {name} {backend}: {seconds:.1f} s", file=sys.stderr, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=IMAGES)
    parser.add_argument("--limit", type=int, default=1000)
    parser.add_argument("--text-classes", type=int, default=1000)
    parser.add_argument("--vitb32-text-classes", type=int, default=1000, help="ViT-B-32's text tower is 12 layers")
    parser.add_argument("--models", default="vitb32,shapes")
    parser.add_argument("--skip-text", action="store_true")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/zsclip-cpu-backends"))
    args = parser.parse_args()

    args.workdir.mkdir(parents=True, exist_ok=True)
    os.environ["ZSCLIP_CACHE_DIR"] = str(args.workdir / "cache")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    files = sorted(str(p) for p in args.images.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))[: args.limit]
    list_file, few = args.workdir / "images.txt", args.workdir / "few.txt"
    list_file.write_text("\n".join(files) + "\n")
    few.write_text("\n".join(files[:4]) + "\n")
    vitb32 = args.workdir / "vitb32-random"
    if not (vitb32 / "open_clip_config.json").is_file():
        subprocess.run([sys.executable, "bench/make_model.py", "ViT-B-32", str(vitb32)], env=env, check=True, cwd=REPO)
    specs = {"vitb32": (str(vitb32), "ViT-B-32 (random init)"), "shapes": ("shapes", "shapes (shipped ResNet)")}
    names = [line.split("\t")[2] for line in (args.images / "classes.tsv").read_text().splitlines()[1:]]

    print(f"{len(files)} JPEGs from {args.images}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"{time.strftime('%Y-%m-%d %H:%M')}, load average {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
    classify_rows, text_rows = [], []
    for key in args.models.split(","):
        spec, name = specs[key]
        classify_rows += classify_runs(spec, name, list_file, few, env)
        if not args.skip_text:
            n = args.vitb32_text_classes if key == "vitb32" else args.text_classes
            text_rows += text_builds(spec, name, names[:n])

    print("\n| model | backend | images | time s | img/s | vs torch | top-1 agreement | max top-1 prob diff |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    base = {}
    for r in classify_rows:
        base.setdefault(r["model"], r["seconds"])
        rate, ratio = r["images"] / r["seconds"], base[r["model"]] / r["seconds"]
        print(f"| {r['model']} | {r['backend']} | {r['images']} | {r['seconds']:.1f} | {rate:.1f} | {ratio:.2f}x "
              f"| {r['agree']:.1%} | {r['max_top1_prob_diff']:.4f} |")  # fmt: skip
    if text_rows:
        print("\n| model | backend | prompts | time s | prompts/s | vs torch | min class cosine |")
        print("|---|---|---:|---:|---:|---:|---:|")
        base = {}
        for r in text_rows:
            base.setdefault(r["model"], r["seconds"])
            print(f"| {r['model']} | {r['backend']} | {r['prompts']} | {r['seconds']:.1f} | "
                  f"{r['prompts'] / r['seconds']:.0f} | {base[r['model']] / r['seconds']:.2f}x | "
                  f"{r['min_class_cosine']:.6f} |")  # fmt: skip
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
