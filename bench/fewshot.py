"""Few-shot curves (issue 25) with the shipped model, and zsclip's linear probe against CLIP_benchmark's.

    python bench/fewshot.py [--per-class 100] [--seeds 3]

For MNIST, CIFAR-10 and CIFAR-100 of ../shared/data (--per-class images of each class): the CLIP paper's Figure 6
for each method (zero-shot, then 1, 2, 4, 8, 16 shots per class, held-out top-1, mean and spread over seeds) and the
time to fit 16 shots x 100 classes. Then, on MNIST and CIFAR-10 (--reference-per-class images of each class), with
16 and with 500 shots per class: zsclip's linear probe against CLIP_benchmark's `linear_probe` training (its own
`find_peak` weight-decay sweep, `train` and `infer`: AdamW, lr 0.1, batch 64) on the same features, shots and test
images, with its default 10 epochs and with enough epochs to converge. CLIP_benchmark sweeps on 1000 held-out images
of its own (zsclip validates on the shots alone); its code insists on CUDA, so here `.cuda()` is made a no-op and it
runs on the CPU unchanged otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import time
from pathlib import Path

import numpy as np

from zsclip.engines import ReadOptions

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
SETS = ("mnist-test", "cifar10-test", "cifar100-test")
SHOTS = (1, 2, 4, 8, 16)


def embedded(model, name: str, per_class: int):
    from zsclip.datasets import load_dataset
    from zsclip.evaluate.run import embed_dataset
    from zsclip.zeroshot.classifier import build_classifier

    dataset = load_dataset(str(SHARED / name))
    dataset = dataset.limit(per_class * len(dataset.classnames))
    return embed_dataset(model, dataset, ReadOptions(store=True)), build_classifier(model, dataset.classnames, "photo")


def clip_benchmark_probe(x_train, y_train, x_val, y_val, x_test, y_test, epochs: int, seed: int = 0) -> float:
    import torch
    from clip_benchmark.metrics import linear_probe as lp
    from torch.utils.data import DataLoader

    torch.nn.Module.cuda = lambda self, *a, **k: self  # its train() calls .cuda(): the CPU here
    torch.Tensor.cuda = lambda self, *a, **k: self

    def accuracy(output, target, topk=(1,)):  # its own fails on NumPy 2 (float() of a 1-element array)
        top = output.topk(max(topk), 1)[1].t() == target.view(1, -1)
        return [float(top[:k].sum()) / len(target) for k in topk]

    lp.accuracy = accuracy

    def loader(x, y):
        return DataLoader(lp.FeatureDataset(torch.tensor(x), torch.tensor(y)), batch_size=64, shuffle=True)

    train, val, test = loader(x_train, y_train), loader(x_val, y_val), loader(x_test, y_test)
    dims, classes = x_train.shape[1], int(max(y_train.max(), y_test.max())) + 1
    wd_list = np.logspace(-6, 2, num=97).tolist()
    start = [i for i, v in enumerate(wd_list) if v in np.logspace(-6, 2, num=7).tolist()]
    args = (train, val, dims, classes, 0.1, epochs, False, "cpu", False, seed)
    with contextlib.redirect_stdout(io.StringIO()):  # its training log
        peak = lp.find_peak(wd_list, start, *args)
        span = 8
        while span > 0:
            peak = lp.find_peak(wd_list, [max(peak - span, 0), peak, min(peak + span, len(wd_list) - 1)], *args)
            span //= 2
        model = lp.train(train, dims, classes, wd_list[peak], 0.1, epochs, False, "cpu", seed)
        logits, target = lp.infer(model, test, False, "cpu")
    return float((logits.argmax(1) == target).float().mean())


# (shots per class, CLIP_benchmark's epochs): its default, then where more epochs stopped helping (measured)
REFERENCE = ((16, (10, 1000)), (500, (10, 100)))


def compare_with_clip_benchmark(model, name: str, per_class: int) -> list[tuple]:
    from zsclip.fewshot import draw_shots, fit_embedded

    emb, clf = embedded(model, name, per_class)
    x, y = emb.features, emb.labels
    rows = []
    for shots, epochs in REFERENCE:
        train, held, _ = draw_shots(y, shots, 0, len(clf))
        held = np.random.default_rng(0).permutation(held)
        val, test = held[:1000], held[1000:]
        ours = fit_embedded(emb, clf, shots, "linear-probe", 0)
        mine = float((ours.head.logits(x[test]).argmax(-1) == y[test]).mean())
        theirs = []
        for n in epochs:
            start = time.perf_counter()
            acc = clip_benchmark_probe(x[train], y[train], x[val], y[val], x[test], y[test], n)
            theirs.append((n, acc, time.perf_counter() - start))
        rows.append((name, shots, len(test), mine, ours.seconds, theirs))
        print(f"# {name} {shots} shots: zsclip {100 * mine:.2f}, CLIP_benchmark {theirs}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--methods", default="linear-probe,tip-adapter,prototype")
    parser.add_argument("--reference-per-class", type=int, default=1000)
    parser.add_argument("--no-reference", action="store_true", help="leave out CLIP_benchmark")
    args = parser.parse_args()
    from zsclip.fewshot import fit_embedded, shot_curve
    from zsclip.models import load_model

    model = load_model("shapes", device="cpu")
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"# bench/fewshot.py, shipped shapes model, {args.per_class} images per class, load average {load}\n")
    print("| data set | method | " + " | ".join(["zero-shot", *(f"{k} shots" for k in SHOTS)]) + " |")
    print("|---|---|" + "---:|" * (len(SHOTS) + 1))
    compare = []
    for name in args.sets.split(","):
        emb, clf = embedded(model, name, args.per_class)
        for method in args.methods.split(","):
            rows = shot_curve(emb, clf, SHOTS, method, args.seeds)
            cells = [f"{100 * r['acc1']:.1f} ± {100 * r['std']:.1f}" for r in rows]
            print(f"| {name} | {method} | " + " | ".join(cells) + " |", flush=True)
        if len(clf) >= 100:
            start = time.perf_counter()
            result = fit_embedded(emb, clf, 16, "linear-probe", 0)
            whole = time.perf_counter() - start
            fitted = f"{result.seconds:.1f} s (with scoring {whole:.1f} s)"
            print(f"\nfit 16 shots x {len(clf)} classes, linear-probe: {fitted}\n")
    if not args.no_reference:
        for name in ("mnist-test", "cifar10-test"):
            compare += compare_with_clip_benchmark(model, name, args.reference_per_class)
    if compare:
        print(
            "\n| same features, shots and test images | shots | test images | zsclip linear-probe (fit) | "
            "CLIP_benchmark linear_probe, epochs: top-1 (time) | zsclip - best of CLIP_benchmark |"
        )
        print("|---|---:|---:|---:|---|---:|")
        for name, shots, tested, mine, seconds, theirs in compare:
            cells = ", ".join(f"{n}: {100 * acc:.1f} ({t:.0f} s)" for n, acc, t in theirs)
            best = max(acc for _, acc, _ in theirs)
            print(
                f"| {name} | {shots} | {tested} | {100 * mine:.1f} ({seconds:.1f} s) | {cells} | "
                f"{100 * (mine - best):+.1f} |"
            )
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"\nend: load average {load}")


if __name__ == "__main__":
    main()
