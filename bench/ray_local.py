"""The Ray engine's overhead: `classify` with the local engine vs `--engine ray` on a local Ray cluster, same
files, model and classes, one run: seconds, images per second, the ratio, and label agreement.

    python bench/ray_local.py [--data ../shared/data/imagenet-samples] [--n 1000] [--model DIR] [--batch-size 32]

The model defaults to ViT-B-32 in random init (as bench/make_model.py writes it), so nothing is downloaded. On a
machine without GPUs both engines encode on the CPU; the Ray engine cannot be faster there, the point is that
its cost over the local engine is small (target: <= 1.3x). The cluster is started before the timed run (as a
long-lived cluster would be) and its start-up is reported separately. No image store: every image is encoded.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

from zsclip.engines import Runtime

CLASSES = ["tench", "goldfish", "great white shark", "tiger shark", "hammerhead", "electric ray", "stingray", "cock"]


def build_model(directory: Path) -> str:
    from make_model import OPENAI_PREPROCESS  # bench/ is on sys.path when a script in it runs

    from zsclip.models import model_config, random_init_model, save_model_dir

    cfg = model_config("ViT-B-32")
    save_model_dir(random_init_model(cfg, 0), cfg, directory, preprocess_cfg=OPENAI_PREPROCESS)
    return str(directory)


def timed(clip, clf, sources, **options) -> tuple[float, list[dict]]:
    from zsclip.classify.predict import classify

    start = time.perf_counter()
    records = [r.to_dict() for r in classify(clip, clf, sources, store=False, **options)]
    return time.perf_counter() - start, records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/imagenet-samples"))
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--model", help="a model spec (default: ViT-B-32 random init, built in a temp dir)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--cpus", type=int, default=os.cpu_count(), help="the local Ray cluster's CPUs")
    args = parser.parse_args()

    import ray
    import torch

    from zsclip.engines.ray import RayOptions
    from zsclip.models import load_model
    from zsclip.zeroshot.classifier import build_classifier

    paths = sorted(str(p) for p in Path(args.data).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))[: args.n]
    sources = [(p, True) for p in paths]
    with tempfile.TemporaryDirectory() as tmp:
        spec = args.model or build_model(Path(tmp) / "vitb32-random")
        clip = load_model(spec, device="cpu")
        clf = build_classifier(clip, CLASSES, ["a photo of a {}."])
        print(f"{len(paths)} JPEGs from {args.data}; model {spec if args.model else 'ViT-B-32 (random init)'}")
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
              f"{torch.__version__}, ray {ray.__version__}, batch {args.batch_size}")  # fmt: skip
        local_s, local = timed(clip, clf, sources, batch_size=args.batch_size)
        start = time.perf_counter()
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
        startup = time.perf_counter() - start
        ray_s, remote = timed(
            clip, clf, sources, batch_size=args.batch_size, runtime=Runtime("ray", RayOptions(actors=1))
        )
        ray.shutdown()
    labelled = [(a, b) for a, b in zip(local, remote, strict=True) if "label" in a]
    same = sum(a["label"] == b["label"] for a, b in labelled)
    worst = max((abs(a["prob"] - b["prob"]) for a, b in labelled), default=0.0)
    assert [r["path"] for r in local] == [r["path"] for r in remote], "records differ in order or number"
    print(f"local engine: {local_s:7.1f} s  {len(paths) / local_s:6.1f} img/s")
    print(f"ray engine:   {ray_s:7.1f} s  {len(paths) / ray_s:6.1f} img/s  (cluster start-up {startup:.1f} s, apart)")
    print(f"ratio ray/local: {ray_s / local_s:.2f}x (target <= 1.3x)")
    print(f"labels the same: {same}/{len(labelled)} ({same / max(len(labelled), 1):.1%}); "
          f"largest probability difference {worst:.2e}")  # fmt: skip


if __name__ == "__main__":
    main()
