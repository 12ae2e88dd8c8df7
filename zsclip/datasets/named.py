"""Named data sets, downloaded into the zsclip cache with a progress bar and a checksum check, or read from
`--root`: imagenet-v2 (= imagenet-v2/matched-frequency), imagenet-v2/threshold-0.7, imagenet-v2/top-images,
cifar10, cifar100 (the test split, torchvision's python format, converted once to PNG files in the cache)."""

from __future__ import annotations

import hashlib
import os
import pickle
import sys
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from zsclip.core.errors import ZsclipError
from zsclip.core.progress import bar, enabled
from zsclip.datasets.base import EvalDataset, builtin_classnames
from zsclip.store.cache import cache_dir

_HF = "https://huggingface.co/datasets/vaishaal/ImageNetV2/resolve/main/"


@dataclass(frozen=True)
class Remote:
    url: str
    size: int
    digest: str  # "sha256:..." or "md5:..."
    folder: str  # the folder inside the archive holding the images
    layout: str  # what --root must contain, for the error message


NAMED = {
    "imagenet-v2/matched-frequency": Remote(
        _HF + "imagenetv2-matched-frequency.tar.gz",
        1264079360,
        "sha256:f0c37fdf925916b19ea1323cd9a2208cdb6959ba2c32eef2a7fc393835c9ca7c",
        "imagenetv2-matched-frequency-format-val",
        "ROOT/imagenetv2-matched-frequency-format-val/<0..999>/<image>.jpeg",
    ),
    "imagenet-v2/threshold-0.7": Remote(
        _HF + "imagenetv2-threshold0.7.tar.gz",
        1249906176,
        "sha256:32142bfe998f9cfa4141be691f6a80eeb1e27b24bd532a668eb08c26d98897a2",
        "imagenetv2-threshold0.7-format-val",
        "ROOT/imagenetv2-threshold0.7-format-val/<0..999>/<image>.jpeg",
    ),
    "imagenet-v2/top-images": Remote(
        _HF + "imagenetv2-top-images.tar.gz",
        1245927936,
        "sha256:85e4ace30f3f0d660152062254b8759dda66267b27f7ec0fd8d5768f1073a04b",
        "imagenetv2-top-images-format-val",
        "ROOT/imagenetv2-top-images-format-val/<0..999>/<image>.jpeg",
    ),
    "cifar10": Remote(
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        170498071,
        "md5:c58f30108f718f92721af3b95e74349a",
        "cifar-10-batches-py",
        "ROOT/cifar-10-batches-py/test_batch (torchvision's CIFAR10 format)",
    ),
    "cifar100": Remote(
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        169001437,
        "md5:eb9058c3a382ffc7106e4002c42a8d85",
        "cifar-100-python",
        "ROOT/cifar-100-python/test (torchvision's CIFAR100 format)",
    ),
}


ALIASES = {"imagenet-v2": "imagenet-v2/matched-frequency", "imagenetv2": "imagenet-v2/matched-frequency"}


DEFAULT_TEMPLATES = {"cifar10": "cifar10", "cifar100": "cifar100"}


def named_folder(key: str, root: str | None) -> Path:
    remote = NAMED[key]
    if root is not None:
        base = Path(root).expanduser()
        for candidate in (base / remote.folder, base):
            if looks_ready(key, candidate):
                return candidate
        raise ZsclipError(f"{key}: not found under --root {base}; expected {remote.layout}")
    target = cache_dir() / "datasets" / key.replace("/", "-")
    if looks_ready(key, target / remote.folder):
        return target / remote.folder
    archive = target / os.path.basename(remote.url)
    _download(key, remote, archive)
    _extract(archive, target)
    archive.unlink()
    return target / remote.folder


def looks_ready(key: str, folder: Path) -> bool:
    if key.startswith("cifar"):
        return (folder / ("test_batch" if key == "cifar10" else "test")).is_file()
    return (folder / "0").is_dir() and (folder / "999").is_dir()


def _download(key: str, remote: Remote, archive: Path) -> None:

    archive.parent.mkdir(parents=True, exist_ok=True)
    partial = archive.with_suffix(archive.suffix + ".part")
    algo, expected = remote.digest.split(":")
    digest = hashlib.new(algo)
    try:
        with urllib.request.urlopen(remote.url, timeout=30) as response, open(partial, "wb") as out:
            total = int(response.headers.get("Content-Length") or remote.size)
            with bar(f"downloading {key}", total, "B", enabled(False)) as progress:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    digest.update(chunk)
                    if progress:
                        progress.update(0, advance=len(chunk))
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise ZsclipError(
            f"{key}: cannot download {remote.url} ({getattr(exc, 'reason', None) or exc}); download it elsewhere "
            f"and pass --root ROOT with {NAMED[key].layout}"
        ) from exc
    if digest.hexdigest() != expected:
        partial.unlink(missing_ok=True)
        raise ZsclipError(f"{key}: checksum mismatch for {remote.url} (expected {algo} {expected}); try again")
    partial.replace(archive)


def _extract(archive: Path, target: Path) -> None:
    print(f"extracting {archive.name} ...", file=sys.stderr)
    with tarfile.open(archive) as tar:
        tar.extractall(target, filter="data")


def imagenet_v2(key: str, folder: Path) -> EvalDataset:
    items = []
    for label in range(1000):
        class_dir = folder / str(label)
        if class_dir.is_dir():
            items += [(str(p), label) for p in sorted(class_dir.iterdir()) if not p.name.startswith(".")]
    return EvalDataset(key, builtin_classnames("imagenet"), items, "imagenet80", str(folder))


def cifar(key: str, folder: Path) -> EvalDataset:
    """torchvision's pickled CIFAR test split, written once as PNG files so every path-based stage works on it."""
    names = builtin_classnames(key)
    pngs = folder / "test-png"
    if not (pngs / "done").is_file():
        import numpy as np
        from PIL import Image

        with open(folder / ("test_batch" if key == "cifar10" else "test"), "rb") as f:
            batch = pickle.load(f, encoding="latin1")
        labels = batch.get("labels", batch.get("fine_labels"))
        data = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        for i, (pixels, label) in enumerate(zip(data, labels, strict=True)):
            out = pngs / f"{label:03d}" / f"{i:05d}.png"
            out.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(out)
        (pngs / "done").write_text("ok")
    items = sorted((str(p), int(p.parent.name)) for p in pngs.glob("*/*.png"))
    items.sort(key=lambda it: Path(it[0]).name)  # the split's own order
    return EvalDataset(key, names, items, DEFAULT_TEMPLATES[key], str(folder))


def on_disk(key: str, root: str | None) -> Path | None:
    """The folder a named set would be read from, if it is there (nothing is downloaded)."""
    if key in NAMED:
        remote = NAMED[key]
        bases = [Path(root).expanduser()] if root else [cache_dir() / "datasets" / key.replace("/", "-")]
        for candidate in (b / remote.folder for b in bases) if not root else (bases[0] / remote.folder, bases[0]):
            if looks_ready(key, candidate):
                return candidate
        return None
    if key.startswith("wds/"):
        folder = cache_dir() / "datasets" / "wds" / key[4:].strip("/").replace("/", "-")
        return folder if folder.is_dir() else None
    return None
