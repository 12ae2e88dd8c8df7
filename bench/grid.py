"""A models x data sets grid on webdataset shards: zsclip's grid vs CLIP_benchmark on the same pairs, one run.

    pip install -e ".[bench]" && python bench/grid.py [--cifar10-per-class 10] [--cifar100-per-class 1]

Models: ViT-B-32 in random init (bench/make_model.py's format) and the shipped `shapes` model. Data sets, all
written as CLIP_benchmark webdataset shards by webdataset's ShardWriter as clip_benchmark.webdataset_builder
writes them (s%07d keys, the PNG bytes as they are, `cls` labels, classnames.txt, the data set's templates):
CIFAR-10 and CIFAR-100 subsets of ../shared/data (N per class) and the shapes eval split (`zsclip data shapes`,
K per class). Both tools use each data set's own templates and classify the same samples.

zsclip: `zsclip.evaluate.grid.run_grid` over the 6 pairs (each model loaded once; a fresh cache, so every prompt and
image
is encoded), then the same grid again with other templates (images from the store). CLIP_benchmark: what its CLI
runs per pair, in-process: load the model, build_wds_dataset, zero_shot_classifier, run_classification, amp off
(its fastest CPU setting). Its accuracy() is not called (it fails with numpy >= 2.3); top-1 is computed from its
logits as it defines it. Seconds per pair exclude model loading for both; model loads are shown apart.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from zsclip.engines import ReadOptions

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[1] / "shared" / "data"


def write_wds(root: Path, samples: list[tuple[bytes, str, int]], classnames: list[str], templates: list[str]) -> Path:
    """CLIP_benchmark's layout, written with webdataset as its convert_dataset writes it."""
    import webdataset

    (root / "test").mkdir(parents=True)
    with webdataset.ShardWriter(str(root / "test" / "%d.tar"), maxcount=100, verbose=0) as sink:
        for i, (data, ext, label) in enumerate(samples):
            sink.write({"__key__": f"s{i:07d}", ext: data, "cls": label})
        shards = sink.shard
    (root / "test" / "nshards.txt").write_text(f"{shards}\n")
    (root / "classnames.txt").write_text("\n".join(classnames) + "\n")
    (root / "zeroshot_classification_templates.txt").write_text("\n".join(templates) + "\n")
    return root


def _templates(name: str) -> list[str]:
    import zsclip

    return [t.replace("{}", "{c}") for t in zsclip.load_templates(name).templates]


def cifar(root: Path, name: str, per_class: int) -> Path:
    folder = SHARED / f"{name}-test"
    rows = [line.split("\t") for line in (folder / "classes.tsv").read_text().splitlines()[1:]]
    names = [r[2].strip() for r in rows]
    picked = [sorted((folder / r[1]).iterdir())[:per_class] for r in rows]
    samples = [(files[j].read_bytes(), "png", label) for j in range(per_class) for label, files in enumerate(picked)]
    return write_wds(root / f"wds_{name}", samples, names, _templates(name))


def shapes_eval(root: Path, per_class: int) -> Path:
    from zsclip.datasets import shapes

    out = root / "shapes-data"
    shapes.write_dataset(out, n=0, eval_per_class=per_class)
    names = [shapes.classname(c, s) for c, s in shapes.COMPOSITIONS]
    samples = [
        ((out / "eval" / n / f"{j:04d}.png").read_bytes(), "png", label)
        for j in range(per_class)
        for label, n in enumerate(names)
    ]
    return write_wds(root / "wds_shapes", samples, names, _templates("shapes"))


def clip_benchmark_pair(model_dir: Path, data: Path, batch_size: int, workers: int) -> tuple[float, float, float]:
    """(model load s, pair s, acc1) as CLIP_benchmark's CLI runs one pair."""
    import open_clip
    from clip_benchmark.datasets.builder import build_wds_dataset
    from clip_benchmark.metrics import zeroshot_classification as zc

    start = time.perf_counter()
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{model_dir}")
    model.eval()
    tokenizer = open_clip.get_tokenizer(f"local-dir:{model_dir}")
    loaded = time.perf_counter()
    dataset = build_wds_dataset(data.name, preprocess, split="test", data_dir=str(data))
    loader = torch.utils.data.DataLoader(dataset.batched(batch_size), batch_size=None, num_workers=workers)
    classifier = zc.zero_shot_classifier(model, tokenizer, dataset.classes, dataset.templates, "cpu", amp=False)
    logits, target = zc.run_classification(model, classifier, loader, "cpu", amp=False)
    done = time.perf_counter()
    return loaded - start, done - loaded, (logits.argmax(1) == target).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cifar10-per-class", type=int, default=10)
    parser.add_argument("--cifar100-per-class", type=int, default=1)
    parser.add_argument("--shapes-per-class", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1, help="decoding processes, both tools")
    args = parser.parse_args()
    if not SHARED.is_dir():
        sys.exit(f"{SHARED} is missing (CIFAR images come from ../shared/data)")
    tmp = Path(tempfile.mkdtemp(prefix="zsclip-grid-"))
    os.environ["ZSCLIP_CACHE_DIR"] = str(tmp / "cache")  # a fresh cache: every prompt and image is encoded

    import zsclip
    from zsclip.evaluate.grid import GridOptions, run_grid
    from zsclip.models import model_config, random_init_model, save_model_dir, shipped_models

    sys.path.insert(0, str(HERE))
    from make_model import OPENAI_PREPROCESS

    cfg = model_config("ViT-B-32")
    vit = save_model_dir(random_init_model(cfg), cfg, tmp / "vitb32-random", preprocess_cfg=OPENAI_PREPROCESS)
    models = {"ViT-B-32 (random)": vit, "shapes (shipped)": shipped_models()["shapes"]}
    sets = {
        f"cifar10 x{args.cifar10_per_class}": cifar(tmp, "cifar10", args.cifar10_per_class),
        f"cifar100 x{args.cifar100_per_class}": cifar(tmp, "cifar100", args.cifar100_per_class),
        f"shapes eval x{args.shapes_per_class}": shapes_eval(tmp, args.shapes_per_class),
    }
    sizes = {label: len(zsclip.load_dataset(f"wds:{d}").items) for label, d in sets.items()}

    read = ReadOptions(batch_size=args.batch_size, workers=args.workers)
    specs, names = [str(m) for m in models.values()], [f"wds:{d}" for d in sets.values()]
    start = time.perf_counter()
    ours = run_grid(specs, names, GridOptions(), device="cpu", read=read)
    ours_total = time.perf_counter() - start
    start = time.perf_counter()
    rerun = run_grid(specs, names, GridOptions(templates="photo"), device="cpu", read=read)
    rerun_total = time.perf_counter() - start
    failed = [r for r in ours + rerun if r["error"]]
    if failed:
        sys.exit(f"zsclip pairs failed: {failed}")

    theirs = {}
    for m, model_dir in models.items():
        for s, data in sets.items():
            theirs[(m, s)] = clip_benchmark_pair(model_dir, data, args.batch_size, args.workers)

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores (shared), torch {torch.__version__}; batch "
        f"{args.batch_size}, {args.workers} decoding worker(s), fp32 on the CPU, each data set's own templates"
    )
    print(f"{'model':20}{'data set':18}{'n':>5}{'CLIP_b s':>10}{'zsclip s':>10}{'ratio':>7}"
          f"{'rerun s':>9}{'acc1 CLIP_b':>12}{'acc1 zsclip':>12}")  # fmt: skip
    k = 0
    for m in models:
        for s in sets:
            row, again = ours[k], rerun[k]
            _, t_theirs, acc_theirs = theirs[(m, s)]
            print(
                f"{m:20}{s:18}{sizes[s]:5d}{t_theirs:10.1f}{row['seconds']:10.1f}{t_theirs / row['seconds']:7.2f}"
                f"{again['seconds']:9.2f}{acc_theirs:12.4f}{row['metrics']['acc1']:12.4f}"
            )
            k += 1
    theirs_pairs = sum(t for _, t, _ in theirs.values())
    theirs_loads = sum(load for load, _, _ in theirs.values())
    ours_pairs = sum(r["seconds"] for r in ours)
    print(
        f"all 6 pairs: CLIP_benchmark {theirs_pairs:.1f} s + {theirs_loads:.1f} s loading a model per pair; zsclip "
        f"{ours_pairs:.1f} s of pairs, {ours_total:.1f} s in all with each model loaded once "
        f"({(theirs_pairs + theirs_loads) / ours_total:.2f}x); the grid again with other templates: "
        f"{rerun_total:.1f} s (no image encoded)"
    )


if __name__ == "__main__":
    main()
