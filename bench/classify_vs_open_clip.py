"""End-to-end `zsclip classify` against a plain open_clip loop on the same model, images and machine, one run.

    python bench/classify_vs_open_clip.py [--arch ViT-B-32] [--images 500] [--data ../shared/data/imagenet-samples]

The model is the real architecture in random init (no weights can be downloaded here). The reference is what an
open_clip user writes: the model's preprocess in a DataLoader (same batch size and worker count), encode_image,
build_zero_shot_classifier, argmax. Prints time, throughput, the ratio and top-1 agreement.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import open_clip
import torch
from PIL import Image

import zsclip
from zsclip.models import model_config, random_init_model, save_model_dir

CLASSES = ["goldfish", "tabby cat", "golden retriever", "sports car", "pizza", "castle", "volcano", "sailboat"]


def _open(path, preprocess):
    return preprocess(Image.open(path))


class Files(torch.utils.data.Dataset):
    """The plain open_clip way: a Dataset of paths for a DataLoader (bench/decode_workers.py gives other `load`)."""

    def __init__(self, paths, preprocess, load=_open):
        self.paths, self.preprocess, self.load = paths, preprocess, load

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return self.load(self.paths[i], self.preprocess)


def reference(model_dir: Path, paths: list[Path], batch_size: int, workers: int) -> list[str]:
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{model_dir}")
    model.eval()
    tokenizer = open_clip.get_tokenizer(f"local-dir:{model_dir}")
    labels = []
    with torch.no_grad():
        weights = open_clip.build_zero_shot_classifier(model, tokenizer, CLASSES, ["a photo of a {}."])
        loader = torch.utils.data.DataLoader(Files(paths, preprocess), batch_size=batch_size, num_workers=workers)
        for pixels in loader:
            feats = torch.nn.functional.normalize(model.encode_image(pixels), dim=-1)
            labels += [CLASSES[i] for i in (feats @ weights).argmax(-1).tolist()]
    return labels


def ours(model_dir: Path, listing: Path, batch_size: int, workers: int) -> list[str]:
    model = zsclip.load_model(str(model_dir), device="cpu")
    clf = zsclip.build_classifier(model, CLASSES, "photo", use_cache=False)
    records = zsclip.classify(model, clf, f"@{listing}", batch_size=batch_size, workers=workers)
    return [r.label for r in records]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="ViT-B-32")
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/imagenet-samples"))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()

    paths = sorted(p for p in Path(args.data).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    paths = paths[: args.images]
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = save_model_dir(random_init_model(model_config(args.arch)), model_config(args.arch), Path(tmp) / "m")
        listing = Path(tmp) / "images.txt"
        listing.write_text("\n".join(map(str, paths)))
        timings = {}
        for name, fn, target in (("open_clip loop", reference, model_dir), ("zsclip", ours, model_dir)):
            start = time.perf_counter()
            labels = fn(target, paths if fn is reference else listing, args.batch_size, args.workers)
            timings[name] = (time.perf_counter() - start, labels)

    (ref_t, ref_labels), (_, our_labels) = timings["open_clip loop"], timings["zsclip"]
    agree = sum(a == b for a, b in zip(ref_labels, our_labels, strict=True)) / len(ref_labels)
    print(
        f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}; {args.arch} random init; {len(paths)} images from {args.data}"
    )
    print(f"{'':16}{'time s':>10}{'img/s':>10}{'ratio':>8}")
    for name, (t, _) in timings.items():
        print(f"{name:16}{t:10.1f}{len(paths) / t:10.2f}{ref_t / t:8.2f}")
    print(f"top-1 agreement: {agree:.4f} ({len(paths)} images)")


if __name__ == "__main__":
    main()
