"""The path users take, timed as whole processes: a first run on the default backend (auto, every extra installed)
against `--backend torch` and a plain open_clip script on the same model, prompts and photos; `zsclip models
--prepare`; and runs after it (auto then runs what the probe measured).

    python bench/default_path.py                       # ViT-B-32 in random init, 20 photos, 20 classes x 18 prompts
    python bench/default_path.py --arch shapes --images 4

Each row is one process (imports, model load, prompts, images, output), from a fresh cache where it says
"first run". Ratios are open_clip's seconds over ours (above 1: faster than open_clip). Labels are compared with
the open_clip script's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
CLASSES = [
    "tench", "goldfish", "great white shark", "tiger shark", "hammerhead shark", "electric ray", "stingray",
    "rooster", "hen", "ostrich", "brambling", "goldfinch", "house finch", "junco", "indigo bunting",
    "American robin", "bulbul", "jay", "magpie", "chickadee",
]  # fmt: skip
OTHER_CLASSES = [
    "beagle", "tabby cat", "school bus", "pizza", "volcano", "sailboat", "umbrella", "banana", "castle", "violin",
    "golden retriever", "pelican", "tractor", "teapot", "lighthouse", "canoe", "broccoli", "zebra", "tiger", "ladybug",
]  # fmt: skip
# A plain open_clip script, as its README shows zero-shot classification (no zsclip imported).
OPEN_CLIP = """
import sys, torch, open_clip
from PIL import Image
spec, listing, classes, templates = sys.argv[1], sys.argv[2], sys.argv[3].split(","), sys.argv[4]
templates = [t for t in open(templates).read().splitlines() if t and not t.startswith("#")]
model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{spec}")
model.eval()
tokenizer = open_clip.get_tokenizer(f"local-dir:{spec}")
with torch.no_grad():
    weights = open_clip.build_zero_shot_classifier(model, tokenizer, classes, [t.format for t in templates])
    for path in open(listing).read().split():
        pixels = preprocess(Image.open(path).convert("RGB")).unsqueeze(0)
        feats = torch.nn.functional.normalize(model.encode_image(pixels), dim=-1)
        print(path, classes[int((feats @ weights).argmax())])
"""


def load() -> str:
    return "load " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def timed(command: list[str], env: dict) -> tuple[float, str, str]:
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=REPO)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed: {done.stderr.strip()[-1500:]}")
    return seconds, done.stdout, done.stderr


def labels(stdout: str) -> dict[str, str]:
    return {r["path"]: r["label"] for r in map(json.loads, stdout.splitlines())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="ViT-B-32", help="an open_clip architecture in random init, or 'shapes'")
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/zsclip-default-path"))
    args = parser.parse_args()
    work = args.workdir
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    if args.arch == "shapes":
        from zsclip.models.spec import parse_spec

        spec = model_dir = parse_spec("shapes").source
    else:
        model_dir = work / f"{args.arch}-random"
        subprocess.run([sys.executable, str(REPO / "bench" / "make_model.py"), args.arch, str(model_dir)], check=True,
                       capture_output=True)  # fmt: skip
        spec = str(model_dir)
    photos = sorted(str(p) for p in (SHARED / "imagenet-samples").rglob("*.JPEG"))
    listing, one = work / "photos.txt", work / "one.txt"
    listing.write_text("\n".join(photos[: args.images]) + "\n")
    classes, templates = ",".join(CLASSES), REPO / "prompts" / "cifar10.txt"
    env = {k: v for k, v in os.environ.items() if k != "ZSCLIP_BACKEND"}
    env["PYTHONPATH"] = str(REPO)
    python = sys.executable

    def cache(name: str) -> dict:
        return {**env, "ZSCLIP_CACHE_DIR": str(work / name)}

    def ours(name: str, listed: Path, *backend: str, classes: str = classes) -> tuple[float, str, str]:
        command = [python, "-m", "zsclip", "classify", f"@{listed}", "-m", spec, "-c", classes, "-t", "cifar10",
                   "-f", "jsonl", "-q", *backend]  # fmt: skip
        return timed(command, cache(name))

    print(f"# bench/default_path.py: {cpu()}, {os.cpu_count()} CPUs, {load()}")
    print(f"model {args.arch}, {args.images} photos, {len(CLASSES)} classes x 18 templates, whole processes\n")
    print("| run | seconds | open_clip / ours | labels as open_clip | load |")
    print("|---|---:|---:|---:|---|")
    ref_s, out, _ = timed([python, "-c", OPEN_CLIP, str(model_dir), str(listing), classes, str(templates)], env)
    reference = dict(line.split(" ", 1) for line in out.splitlines() if line)

    def row(what: str, seconds: float, out: str) -> None:
        got = labels(out)
        same = sum(got.get(p) == lab for p, lab in reference.items()) / max(len(reference), 1)
        print(f"| {what} | {seconds:.1f} | {ref_s / seconds:.2f}x | {same:.0%} | {load()} |", flush=True)

    print(f"| open_clip script (reference) | {ref_s:.1f} | 1.00x | 100% | {load()} |", flush=True)
    row("zsclip --backend torch, first run", *ours("torch", listing, "--backend", "torch")[:2])
    row("zsclip default (auto), first run", *ours("auto", listing)[:2])
    prepare_s, table, _ = timed(
        [python, "-m", "zsclip", "models", "--prepare", spec, "-q", "-f", "jsonl"], cache("auto")
    )
    choice = next(r["backend"] for r in map(json.loads, table.splitlines()) if r["chosen"])
    print(f"| zsclip models --prepare (once per model and CPU; auto chose {choice}) | {prepare_s:.1f} | | | {load()} |")
    # A later run with other classes and other photos, after the first run (torch) and after --prepare (auto).
    second = work / "second.txt"
    second.write_text("\n".join(photos[args.images : 2 * args.images]) + "\n")
    for name, backend, what in (("torch", ("--backend", "torch"), "--backend torch"), ("auto", (), f"auto: {choice}")):
        seconds = ours(name, second, *backend, classes=",".join(OTHER_CLASSES))[0]
        print(f"| later run, new classes and photos: {what} | {seconds:.1f} | | | {load()} |", flush=True)
    for name, backend in (("torch", ("--backend", "torch")), ("auto", ())):
        new = work / f"new-{name}.jpg"
        shutil.copyfile(photos[-1], new)
        os.utime(new, ns=(time.time_ns(), time.time_ns()))
        one.write_text(f"{new}\n")
        seconds = ours(name, one, *backend)[0]
        print(f"| one new image, prompts cached: {'--backend torch' if backend else f'auto: {choice}'} "
              f"| {seconds:.2f} | | | {load()} |", flush=True)  # fmt: skip
    print(f"\nend: {load()}")


if __name__ == "__main__":
    main()
