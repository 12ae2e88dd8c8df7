"""Small webdataset data sets in CLIP_benchmark's layout, written with tarfile, for the wds tests and bench/grid.py.

    DIR/<split>/0.tar ... N-1.tar, DIR/<split>/nshards.txt, DIR/classnames.txt,
    DIR/zeroshot_classification_templates.txt, DIR/dataset_type.txt (retrieval sets)
Members are named as clip_benchmark.webdataset_builder names them: s0000000.webp + s0000000.cls (or .txt).
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from zsclip.datasets import shapes


def encode(image: Image.Image, fmt: str) -> bytes:
    """Image bytes as CLIP_benchmark writes them (webp lossless, png, jpg)."""
    buf = io.BytesIO()
    options = {"webp": {"format": "webp", "lossless": True}, "png": {"format": "png"}, "jpg": {"format": "jpeg"}}
    image.save(buf, **options[fmt])
    return buf.getvalue()


def write_shards(split_dir: Path, samples: Sequence[dict[str, bytes]], per_shard: int) -> list[Path]:
    """One tar per `per_shard` samples; each sample is {suffix: bytes}, keyed s%07d by its index."""
    split_dir.mkdir(parents=True, exist_ok=True)
    shards = []
    for n, start in enumerate(range(0, len(samples), per_shard)):
        path = split_dir / f"{n}.tar"
        with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
            for i, sample in enumerate(samples[start : start + per_shard], start):
                for suffix, data in sample.items():
                    info = tarfile.TarInfo(f"s{i:07d}.{suffix}")
                    info.size = len(data)
                    info.mtime = 1_700_000_000
                    tar.addfile(info, io.BytesIO(data))
        shards.append(path)
    (split_dir / "nshards.txt").write_text(f"{len(shards)}\n")
    return shards


def write_classification(
    root: Path,
    labelled: Iterable[tuple[bytes, str, int]],  # (image bytes, suffix, label)
    classnames: Sequence[str],
    templates: Sequence[str] | None = ("a photo of a {c}.", "a drawing of a {c}."),
    *,
    split: str = "test",
    per_shard: int = 5,
) -> Path:
    samples = [{suffix: data, "cls": str(label).encode()} for data, suffix, label in labelled]
    write_shards(root / split, samples, per_shard)
    (root / "classnames.txt").write_text("\n".join(classnames) + "\n")
    if templates is not None:
        (root / "zeroshot_classification_templates.txt").write_text("\n".join(templates) + "\n")
    return root


def write_retrieval(root: Path, captioned: Iterable[tuple[bytes, str, list[str]]], *, per_shard: int = 5) -> Path:
    samples = [{suffix: data, "txt": "\n".join(captions).encode()} for data, suffix, captions in captioned]
    write_shards(root / "test", samples, per_shard)
    (root / "dataset_type.txt").write_text("retrieval\n")
    return root


def shapes_images(classes: Sequence[tuple[str, str]], per_class: int, size: int = 64, seed: int = 0):
    """(PIL image, class index) rendered by zsclip.datasets.shapes, classes interleaved."""
    rng = np.random.default_rng(seed)
    for _ in range(per_class):
        for label, (colour, shape) in enumerate(classes):
            yield shapes.render(shapes.sample_scene(rng, colour, shape), size, rng), label
