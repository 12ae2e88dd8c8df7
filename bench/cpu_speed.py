"""Every figure of issue 23 (CPU speed you can trust) in one run, with the machine's load beside each section.

    python bench/cpu_speed.py --trained DIR          # DIR: a tiny ViT from `zsclip train --config tiny-vit`
    python bench/cpu_speed.py --sections agreement --per-set 200     # one section, smaller

Sections (all by default):
- agreement: top-1 agreement with the fp32 (torch) labels of the int8 image tower alone and with its label check
  (zsclip.backends.int8; the share it re-encodes), onnx fp32's agreement, and the fp32 model's own accuracy, on
  --per-set images of every ../shared/data set and the shapes world's eval split, for the shipped `shapes` ResNet
  and the --trained tiny ViT. The check is calibrated as a first run on that folder calibrates it: on its first
  64 images and the 64 built-in ones.
- cosine: ViT-B-32 in random init, --cosine-images ImageNet photos: min cosine of int8 vs fp32 embeddings.
- e2e: whole-process `zsclip classify --no-store` of --e2e-images photos with ViT-B-32 per backend, ratio to torch
  and label agreement with torch.
- latency: whole process with ViT-B-32 exported, per backend: a first run storing --stored photos, a fully cached
  rerun, new classes (10 x 7 prompts) on them, one new image; and whether the process imported torch.
- pipeline: in this process, the local engine end to end (decoding workers included, store off) vs the bare
  encoder of the same backend on the same photos decoded beforehand; and what decoding one photo costs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from zsclip.engines import ReadOptions

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
SECTIONS = ("agreement", "cosine", "e2e", "latency", "pipeline")
CLASSES = "tench,goldfish,great white shark,hen,ostrich,tree frog,loggerhead turtle,king snake,tarantula,beagle"
NEW_CLASSES = "golden retriever,tabby cat,school bus,pizza,volcano,sailboat,umbrella,banana,castle,violin"
# Prints whether torch was imported, after the command ran (the torch-free path of issue 23).
WRAP = (
    "import atexit, runpy, sys; atexit.register(lambda: print('TORCH', 'torch' in sys.modules, file=sys.stderr)); "
    "sys.argv = ['zsclip', *sys.argv[1:]]; runpy.run_module('zsclip', run_name='__main__')"
)


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def say(line: str = "") -> None:
    print(line, flush=True)


def zsclip(args: list[str], env: dict) -> tuple[float, str, str]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", WRAP, *args], env=env, capture_output=True, text=True, cwd=REPO)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"zsclip {' '.join(args)} failed: {done.stderr.strip()[-1500:]}")
    return seconds, done.stdout, done.stderr


def labels_of(stdout: str) -> dict[str, str]:
    return {r["path"]: r["label"] for r in map(json.loads, filter(str.strip, stdout.splitlines()))}


def image_sets(per_set: int, shapes_eval: Path | None) -> dict[str, tuple[list[str], list[int], list[str]]]:
    """name -> (paths, true class indices, class names): per_set images spread over the classes."""
    from zsclip.datasets.shapes import COMPOSITIONS, classname

    sets = {}
    if shapes_eval is not None:
        names = [classname(c, s) for c, s in COMPOSITIONS]
        folders = sorted(p for p in shapes_eval.iterdir() if p.is_dir())
        sets["shapes eval split"] = _spread(folders, [names.index(f.name.replace("_", " ")) for f in folders], per_set)
        sets["shapes eval split"] += (names,)
    for root in sorted(p for p in SHARED.iterdir() if (p / "classes.tsv").is_file()) if SHARED.is_dir() else []:
        rows = [line.split("\t") for line in (root / "classes.tsv").read_text().splitlines()[1:]]
        folders = [root / folder for _, folder, _ in rows]
        sets[root.name] = (*_spread(folders, list(range(len(rows))), per_set), [r[2].strip() for r in rows])
    return sets


def _spread(folders: list[Path], truth: list[int], n: int) -> tuple[list[str], list[int]]:
    files = [sorted(str(p) for p in f.iterdir()) for f in folders]
    paths, labels, depth = [], [], 0
    while len(paths) < n and any(depth < len(f) for f in files):
        for i, f in enumerate(files):
            if depth < len(f) and len(paths) < n:
                paths.append(f[depth])
                labels.append(truth[i])
        depth += 1
    return paths, labels


def decoded(model, paths: list[str]) -> np.ndarray:
    from zsclip.pipeline.images import sample_pixels

    return sample_pixels([(p, True) for p in paths], model.preprocess.geometry, len(paths))


ENCODERS: dict = {}  # (exports, backend) -> OnnxEncoder: its sessions open once, as in a run


def encoded(model, pixels: np.ndarray, backend: str, exports) -> np.ndarray:
    from zsclip.backends import OnnxEncoder
    from zsclip.pipeline.encode import encode_images

    model.backend = backend
    if backend != "torch" and (exports, backend) not in ENCODERS:
        ENCODERS[exports, backend] = OnnxEncoder(exports, "int8" if backend == "onnx-int8" else "fp32")
    model.encoder = None if backend == "torch" else ENCODERS[exports, backend]
    return np.concatenate([encode_images(model, pixels[i : i + 64]) for i in range(0, len(pixels), 64)])


def agreement(args, cache) -> None:
    from zsclip.backends import Exports
    from zsclip.backends.int8 import USER_IMAGES, threshold, uncertain
    from zsclip.models import load_model
    from zsclip.zeroshot.classifier import build_classifier

    sets = image_sets(args.per_set, args.shapes_eval)
    models = [("shapes", "shipped shapes ResNet")]
    if args.trained:
        models.append((str(args.trained), "tiny ViT trained here"))
    else:
        say("(no --trained tiny ViT given: the shipped model only)")
    say(f"\n## int8 top-1 agreement with fp32 (torch) labels ({load()})\n")
    say("| model | set | images | classes | fp32 acc1 | onnx | int8 alone | int8 + check | re-encoded | min cos |")
    say("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for spec, name in models:
        model = load_model(spec, device="cpu")
        exports = Exports(model, cache, show=False)
        worst = 1.0
        for set_name, (paths, truth, classes) in sets.items():
            pixels = decoded(model, paths)
            # What a first run on this folder calibrates the check on.
            exports.calibration = lambda _model, p=pixels: p[:USER_IMAGES]
            exports.check_path.unlink(missing_ok=True)
            model.backend, model.encoder = "torch", None
            weights = build_classifier(model, classes, "shapes").weights
            vec = {b: encoded(model, pixels, b, exports) for b in ("torch", "onnx", "onnx-int8")}
            top = {b: (v @ weights.T).argmax(-1) for b, v in vec.items()}
            near = uncertain(vec["onnx-int8"], weights, threshold(exports.ensure_check(), weights))
            checked = np.where(near, top["onnx"], top["onnx-int8"])
            agree = float((checked == top["torch"]).mean())
            worst = min(worst, agree)
            say(
                f"| {name} | {set_name} | {len(pixels)} | {len(classes)} | {(top['torch'] == truth).mean():.1%} | "
                f"{(top['onnx'] == top['torch']).mean():.2%} | {(top['onnx-int8'] == top['torch']).mean():.2%} | "
                f"**{agree:.2%}** | {near.mean():.1%} | {(vec['onnx-int8'] * vec['torch']).sum(-1).min():.5f} |"
            )
        say(f"{name}: lowest int8 + check agreement {worst:.2%} (bar 99.5%)")


def vitb32(args) -> Path:
    target = args.workdir / f"{args.arch}-random"
    if not (target / "open_clip_config.json").is_file():
        subprocess.run([sys.executable, str(REPO / "bench" / "make_model.py"), args.arch, str(target)], check=True)
    return target


def cosine(args, cache) -> None:
    from zsclip.backends import Exports
    from zsclip.models import load_model

    model = load_model(str(vitb32(args)), device="cpu")
    exports = Exports(model, cache, show=True)
    paths = image_sets(args.cosine_images, None)["imagenet-samples"][0]
    pixels = decoded(model, paths)
    vec = {b: encoded(model, pixels, b, exports) for b in ("torch", "onnx", "onnx-int8")}
    say(f"\n## {args.arch} (random init) embeddings vs torch, {len(pixels)} ImageNet photos ({load()})\n")
    for b in ("onnx", "onnx-int8"):
        cos = (vec[b] * vec["torch"]).sum(-1)
        say(f"{b}: min cosine {cos.min():.6f}, mean {cos.mean():.6f} (bar for int8: 0.9995)")


def photo_list(args, n: int, name: str, offset: int = 0) -> Path:
    paths = sorted(str(p) for p in (SHARED / "imagenet-samples").rglob("*.JPEG"))[offset : offset + n]
    target = args.workdir / f"{name}.txt"
    target.write_text("\n".join(paths) + "\n")
    return target


def e2e(args, env: dict) -> None:
    spec = str(vitb32(args))
    listed = photo_list(args, args.e2e_images, "e2e")
    few = photo_list(args, 4, "few")
    say(f"\n## {args.arch} whole process, classify --no-store, {args.e2e_images} photos, 10 classes ({load()})\n")
    say("| backend | seconds | vs torch | labels as torch | re-encoded by the check |")
    say("|---|---:|---:|---:|---|")
    reference = base = None
    for backend in ("torch", "onnx", "onnx-int8"):
        common = ["classify", "-m", spec, "-c", CLASSES, "-t", "photo", "-f", "jsonl", "--backend", backend]
        zsclip([*common, "-q", f"@{few}"], env)  # the export, the check and the prompts, not timed
        seconds, out, err = zsclip([*common, "--no-store", f"@{listed}"], env)
        got = labels_of(out)
        reference, base = reference or got, base or seconds
        same = sum(got[p] == reference[p] for p in reference) / len(reference)
        near = [line.split(":")[1].split("near")[0].strip() for line in err.splitlines() if "near a tie" in line]
        say(f"| {backend} | {seconds:.1f} | {base / seconds:.2f}x | {same:.2%} | {', '.join(near)} |")
    say(f"({load()})")


def latency(args, env: dict) -> None:
    spec = str(vitb32(args))
    stored = photo_list(args, args.stored, "stored")
    say(f"\n## {args.arch} exported, whole process, {args.stored} stored photos ({load()})\n")
    say(
        "| backend | first run | cached rerun (<= 1.0 s) | new classes 10 x 7 (<= 2.0 s) | one new image (<= 1.0 s) "
        "| torch imported |"
    )
    say("|---|---:|---:|---:|---:|---|")
    photo = sorted((SHARED / "imagenet-samples").rglob("*.JPEG"))[-1]
    zsclip(["models", "--prepare", spec, "-q", "-f", "jsonl"], env)  # auto runs what this measured (else torch)
    for backend in ("onnx", "onnx-int8", "auto"):
        common = ["classify", "-m", spec, "-f", "jsonl", "-q", "--backend", backend]
        first = zsclip([*common, "-c", CLASSES, "-t", "photo", f"@{stored}"], env)[0]
        rerun = min(zsclip([*common, "-c", CLASSES, "-t", "photo", f"@{stored}"], env)[0] for _ in range(2))
        stamp = f"{backend} {time.time_ns() % 10**6}"  # never cached before, in this cache or an earlier run's
        fresh = [c.strip() + f" {stamp}" for c in NEW_CLASSES.split(",")]
        new_classes, _, err_nc = zsclip([*common, "-c", ",".join(fresh), "-t", "imagenet7", f"@{stored}"], env)
        new = args.workdir / f"new-{backend}.jpg"
        shutil.copyfile(photo, new)
        os.utime(new, ns=(time.time_ns(), time.time_ns()))
        one, _, err = zsclip([*common, "-c", CLASSES, "-t", "photo", str(new)], env)
        torch_in = [line.split()[1] for line in err.splitlines() + err_nc.splitlines() if line.startswith("TORCH")]
        say(f"| {backend} | {first:.2f} | {rerun:.2f} | {new_classes:.2f} | {one:.2f} | {', '.join(torch_in)} |")
    say(f"({load()}; torch imported: new image, then new classes)")


def pipeline(args, cache) -> None:
    from zsclip.backends import Exports
    from zsclip.engines import embed_stream
    from zsclip.models import load_model
    from zsclip.pipeline.encode import draft_size
    from zsclip.pipeline.images import open_image

    model = load_model(str(vitb32(args)), device="cpu")
    exports = Exports(model, cache, show=True)
    paths = [line for line in photo_list(args, args.pipeline_images, "pipeline").read_text().splitlines() if line]
    pixels = decoded(model, paths)
    say(f"\n## Pipeline vs bare encoder, {args.arch}, {len(paths)} photos, batch 32 ({load()})\n")
    say("| backend | bare encoder img/s | end to end img/s | ratio (>= 0.9) |")
    say("|---|---:|---:|---:|")
    for backend in ("torch", "onnx", "onnx-int8"):
        encoded(model, pixels[:32], backend, exports)  # warm-up
        start = time.perf_counter()
        for i in range(0, len(pixels), 32):
            encoded(model, pixels[i : i + 32], backend, exports)
        bare = len(pixels) / (time.perf_counter() - start)
        start = time.perf_counter()
        n = sum(
            len(b.paths)
            for b in embed_stream(model, [(p, True) for p in paths], ReadOptions(batch_size=32, store=False))
        )
        whole = n / (time.perf_counter() - start)
        say(f"| {backend} | {bare:.1f} | {whole:.1f} | {whole / bare:.2f} |")
    draft = draft_size(model)
    start = time.perf_counter()
    for p in paths[:200]:
        with open_image(p) as im:
            im.draft("RGB", (draft, draft))
            im.load()
    opened = (time.perf_counter() - start) / len(paths[:200])
    start = time.perf_counter()
    for p in paths[:200]:
        with open_image(p) as im:
            im.draft("RGB", (draft, draft))
            model.preprocess.geometry(im)
    whole = (time.perf_counter() - start) / len(paths[:200])
    say(f"decoding one photo in one process: {whole * 1e3:.2f} ms ({opened * 1e3:.2f} ms open + draft + load, "
        f"{(whole - opened) * 1e3:.2f} ms resize and crop to uint8); ({load()})")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", default=",".join(SECTIONS))
    parser.add_argument("--trained", type=Path, help="a tiny-vit model directory from `zsclip train`")
    parser.add_argument("--shapes-eval", type=Path, help="the shapes world's eval split (default: made here)")
    parser.add_argument("--arch", default="ViT-B-32", help="the random-init architecture of the speed sections")
    parser.add_argument("--per-set", type=int, default=1000)
    parser.add_argument("--cosine-images", type=int, default=200)
    parser.add_argument("--e2e-images", type=int, default=500)
    parser.add_argument("--stored", type=int, default=1000)
    parser.add_argument("--pipeline-images", type=int, default=1000)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/zsclip-cpu-speed"))
    args = parser.parse_args()
    from zsclip.store.cache import Cache

    sections = args.sections.split(",")
    args.workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO), "ZSCLIP_CACHE_DIR": str(args.workdir / "cache")}
    env.pop("ZSCLIP_BACKEND", None)
    os.environ["ZSCLIP_CACHE_DIR"] = env["ZSCLIP_CACHE_DIR"]
    cache = Cache(args.workdir / "cache")
    if args.shapes_eval is None and "agreement" in sections:
        args.shapes_eval = args.workdir / "shapes" / "eval"
        if not args.shapes_eval.is_dir():
            make = [sys.executable, "-m", "zsclip", "data", "shapes", str(args.shapes_eval.parent), "--n", "36"]
            subprocess.run(make, env=env, check=True, capture_output=True)
    import onnxruntime
    import torch

    say(
        f"# bench/cpu_speed.py, {os.cpu_count()} CPUs, torch {torch.__version__}, onnxruntime {onnxruntime.__version__}"
    )
    say(f"start: {load()}")
    for name in sections:
        if name in ("agreement", "cosine", "pipeline"):
            globals()[name](args, cache)
        else:
            globals()[name](args, env)
    say(f"\nend: {load()}")


if __name__ == "__main__":
    main()
