"""Do the ONNX backends give torch's labels on trained models? (issue 18, part 2)

    python bench/backend_agreement.py                     # trains a tiny ViT on the shapes world first
    python bench/backend_agreement.py --trained DIR       # reuse a model `zsclip train` wrote

Models: a tiny ViT trained here with `zsclip data shapes` + `zsclip train --config tiny-vit`, the shipped `shapes`
ResNet, and (embedding cosine only) ViT-B-32 in random init. Images: the shapes world's eval split (36 classes)
and the first images of every class of each ../shared/data set, with that set's class names. Each backend
encodes the same decoded pixels and its own text classifier; top-1 agreement and max |prob diff| are against
torch. The bars: onnx >= 99.9%, onnx-int8 >= 99.5% (zsclip.backends.BARS).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
BACKENDS = ("torch", "onnx", "onnx-int8")


def run(*args: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, *args], env=env, check=True, cwd=REPO)


def image_sets(shapes_eval: Path, per_class: int) -> dict[str, tuple[list[str], list[str]]]:
    """name -> (image paths, class names)."""
    from zsclip.shapes import COMPOSITIONS, classname

    sets = {"shapes eval split": ([str(p) for p in sorted(shapes_eval.rglob("*.png"))], None)}
    sets["shapes eval split"] = (sets["shapes eval split"][0], [classname(c, s) for c, s in COMPOSITIONS])
    for root in sorted(p for p in SHARED.iterdir() if (p / "classes.tsv").is_file()) if SHARED.is_dir() else []:
        rows = [line.split("\t") for line in (root / "classes.tsv").read_text().splitlines()[1:]]
        paths = []
        for _, folder, _ in rows:
            paths += [str(f) for f in sorted((root / folder).iterdir())[:per_class]]
        sets[root.name] = (paths, [name.strip() for _, _, name in rows])
    return sets


def pixels_of(model, paths: list[str]) -> torch.Tensor:
    from zsclip.encode import draft_size
    from zsclip.images import iter_batches

    sources = [(p, True) for p in paths]
    batches = iter_batches(sources, model.preprocess, batch_size=64, workers=1, draft=draft_size(model))
    return torch.cat([b.pixels for b in batches if b.pixels is not None])


def compare(spec: str, sets: dict, templates: str) -> list[dict]:
    from zsclip.backends import use_backend
    from zsclip.encode import encode_images
    from zsclip.models import load_model
    from zsclip.text import build_classifier

    models = {b: use_backend(load_model(spec, device="cpu"), b) for b in BACKENDS}
    rows = []
    for set_name, (paths, classes) in sets.items():
        pixels = pixels_of(models["torch"], paths)
        reference = None
        for backend, model in models.items():
            clf = build_classifier(model, classes, templates)
            images = torch.cat([encode_images(model, pixels[i : i + 64]) for i in range(0, len(pixels), 64)])
            probs = (clf.logit_scale * images @ clf.weights.T).softmax(dim=-1)
            reference = reference or (images, probs)
            rows.append({
                "set": set_name, "backend": backend, "images": len(pixels), "classes": len(classes),
                "agreement": float((probs.argmax(-1) == reference[1].argmax(-1)).float().mean()),
                "max_prob_diff": float((probs - reference[1]).abs().max()),
                "min_cosine": float((images * reference[0]).sum(-1).min()),
            })  # fmt: skip
            print(f"  {spec} {set_name} {backend}: {rows[-1]['agreement']:.2%}", file=sys.stderr, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trained", type=Path, help="a tiny-vit model directory from `zsclip train`")
    parser.add_argument("--epochs", type=int, default=2, help="training epochs for the tiny ViT (6000 pairs)")
    parser.add_argument("--per-class", type=int, default=5, help="images per class of each ../shared/data set")
    parser.add_argument("--vitb32-images", type=int, default=64)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/zsclip-backend-agreement"))
    args = parser.parse_args()
    from zsclip.backends import BARS

    args.workdir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("ZSCLIP_CACHE_DIR", str(args.workdir / "cache"))
    data = args.workdir / "shapes-data"
    if not (data / "eval").is_dir():
        run("-m", "zsclip", "data", "shapes", str(data), "--n", "6000", "--eval-per-class", "30")
    trained = args.trained or args.workdir / "tiny-vit"
    if not (trained / "open_clip_config.json").is_file():
        epochs = str(args.epochs)
        run("-m", "zsclip", "train", str(data), "--config", "tiny-vit", "-o", str(trained), "--epochs", epochs,
            "--batch-size", "64", "-t", "shapes", "-q")  # fmt: skip
    vitb32 = args.workdir / "vitb32-random"
    if not (vitb32 / "open_clip_config.json").is_file():
        run("bench/make_model.py", "ViT-B-32", str(vitb32))

    sets = image_sets(data / "eval", args.per_class)
    rows = [{"model": "tiny ViT (trained here)", **r} for r in compare(str(trained), sets, "shapes")]
    rows += [{"model": "shapes (shipped ResNet)", **r} for r in compare("shapes", sets, "shapes")]
    imagenet = {k: (v[0][: args.vitb32_images], v[1]) for k, v in sets.items() if k == "imagenet-samples"}
    # One template: 1000 ImageNet classes x 80 templates through a 12-layer text tower per backend would dominate.
    rows += [{"model": "ViT-B-32 (random init)", **r} for r in compare(str(vitb32), imagenet, "photo")]

    (args.workdir / "results.json").write_text(json.dumps(rows, indent=1))
    print("\n| model | images | backend | images | classes | top-1 agreement | max abs prob diff | min image cosine |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        if r["backend"] == "torch":
            continue
        bar = BARS[r["backend"]]
        mark = "" if r["agreement"] >= bar else f" (below {bar:.1%})"
        print(f"| {r['model']} | {r['set']} | {r['backend']} | {r['images']} | {r['classes']} | "
              f"{r['agreement']:.2%}{mark} | {r['max_prob_diff']:.4f} | {r['min_cosine']:.5f} |")  # fmt: skip
    for model in dict.fromkeys(r["model"] for r in rows):
        for backend in BACKENDS[1:]:
            mine = [r for r in rows if r["model"] == model and r["backend"] == backend]
            total = sum(r["images"] for r in mine)
            agree = sum(r["agreement"] * r["images"] for r in mine) / total
            print(f"{model} {backend}: {agree:.2%} of {total} images agree with torch (bar {BARS[backend]:.1%})")


if __name__ == "__main__":
    main()
