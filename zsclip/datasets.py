"""Evaluation data sets -> (image path, true class index) items with class names and a default template set.

Named sets (downloaded into the zsclip cache with a progress bar and a checksum check, or read from `--root`):
  imagenet-v2 (= imagenet-v2/matched-frequency), imagenet-v2/threshold-0.7, imagenet-v2/top-images
  cifar10, cifar100 (test split, torchvision's python format; converted once to PNG files in the cache)
Any folder in ImageFolder layout (DIR/<class>/<image>), with class names from DIR/classes.tsv, `--classnames`, or
the folder names; and `csv:FILE` with path,label columns.
"""

from __future__ import annotations

import csv
import hashlib
import os
import pickle
import sys
import tarfile
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

from .cache import cache_dir
from .errors import UsageError, ZsclipError
from .images import has_image_extension, walk
from .prompts import _classes_from_table, check_classnames

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


@dataclass
class EvalDataset:
    name: str
    classnames: list[str]
    items: list[tuple[str, int]]  # (image path, true class index)
    templates: str | None = None  # the data set's own template set, if it has one
    source: str = ""
    notes: list[str] = field(default_factory=list)

    def limit(self, n: int | None) -> EvalDataset:
        """A stratified subset: classes take turns, in order, until n images are picked."""
        if n is None or n >= len(self.items):
            return self
        per_class: dict[int, list[tuple[str, int]]] = defaultdict(list)
        for item in self.items:
            per_class[item[1]].append(item)
        picked: list[tuple[str, int]] = []
        depth = 0
        while len(picked) < n:
            for label in sorted(per_class):
                if depth < len(per_class[label]) and len(picked) < n:
                    picked.append(per_class[label][depth])
            depth += 1
        order = {item: i for i, item in enumerate(self.items)}
        picked.sort(key=order.__getitem__)
        return EvalDataset(self.name, self.classnames, picked, self.templates, self.source, [*self.notes])


# -- class-name lists --------------------------------------------------------------------------------------
def builtin_classnames(name: str) -> list[str] | None:
    """imagenet (open_clip's curated CLIP names), cifar10, cifar100 and shapes, else None."""
    if name == "imagenet":
        return list(IMAGENET_CLASSNAMES)
    entry = resources.files("zsclip.prompt_files") / "classes" / f"{name}.txt"
    if entry.is_file():
        return [line.strip() for line in entry.read_text(encoding="utf-8").splitlines() if line.strip()]
    return None


def _classnames_option(value: str) -> list[str]:
    names = builtin_classnames(value)
    if names is not None:
        return names
    from .prompts import read_classes_file

    return read_classes_file(value)


# -- resolution --------------------------------------------------------------------------------------------
def load_dataset(name: str, *, root: str | None = None, classnames: str | None = None) -> EvalDataset:
    """Resolve a data set name, folder or csv:FILE to its items."""
    key = ALIASES.get(name, name)
    if key in NAMED:
        folder = _locate(key, root)
        if key.startswith("imagenet-v2"):
            return _imagenet_v2(key, folder)
        return _cifar(key, folder)
    if name.startswith("csv:"):
        return _csv_dataset(Path(name[4:]), classnames)
    path = Path(name).expanduser()
    if path.is_dir():
        return _image_folder(path, classnames)
    known = ", ".join([*NAMED, "imagenet-v2"])
    raise UsageError(f"unknown data set {name!r}: use one of {known}, a folder (DIR/<class>/<image>), or csv:FILE")


def _locate(key: str, root: str | None) -> Path:
    remote = NAMED[key]
    if root is not None:
        base = Path(root).expanduser()
        for candidate in (base / remote.folder, base):
            if _looks_ready(key, candidate):
                return candidate
        raise ZsclipError(f"{key}: not found under --root {base}; expected {remote.layout}")
    target = cache_dir() / "datasets" / key.replace("/", "-")
    if _looks_ready(key, target / remote.folder):
        return target / remote.folder
    archive = target / os.path.basename(remote.url)
    _download(key, remote, archive)
    _extract(archive, target)
    archive.unlink()
    return target / remote.folder


def _looks_ready(key: str, folder: Path) -> bool:
    if key.startswith("cifar"):
        return (folder / ("test_batch" if key == "cifar10" else "test")).is_file()
    return (folder / "0").is_dir() and (folder / "999").is_dir()


def _download(key: str, remote: Remote, archive: Path) -> None:
    from .progress import bar, enabled

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


def _imagenet_v2(key: str, folder: Path) -> EvalDataset:
    items = []
    for label in range(1000):
        class_dir = folder / str(label)
        if class_dir.is_dir():
            items += [(str(p), label) for p in sorted(class_dir.iterdir()) if not p.name.startswith(".")]
    return EvalDataset(key, list(IMAGENET_CLASSNAMES), items, "imagenet80", str(folder))


def _cifar(key: str, folder: Path) -> EvalDataset:
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


def _image_folder(root: Path, classnames: str | None) -> EvalDataset:
    folders = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not folders:
        raise UsageError(f"{root}: no class folders (expected the ImageFolder layout DIR/<class>/<image>)")
    notes = []
    tsv = root / "classes.tsv"
    if tsv.is_file() and classnames is None:
        rows = [r for r in csv.reader(tsv.read_text(encoding="utf-8").splitlines(), delimiter="\t") if r]
        header = [c.strip().lower() for c in rows[0]]
        if "folder" in header:
            fcol = header.index("folder")
            ordered = sorted(rows[1:], key=lambda r: int(r[header.index("index")])) if "index" in header else rows[1:]
            folders = [r[fcol].strip() for r in ordered]
        names = _classes_from_table(tsv.read_text(encoding="utf-8"), "\t", tsv)
        notes.append(f"class names from {tsv}")
    elif classnames is not None:
        names = _classnames_option(classnames)
        notes.append(f"class names from --classnames {classnames}")
    else:
        names = [f.replace("_", " ") for f in folders]
        notes.append("class names from folder names")
    if len(names) != len(folders):
        raise UsageError(f"{root}: {len(folders)} class folders but {len(names)} class names")
    _check_names(names, f"class names of {root}", notes)
    items = []
    for label, folder in enumerate(folders):
        sources = [(str(root / folder), False)]
        items += [(p, label) for p, _ in walk(sources) if has_image_extension(p)]
    return EvalDataset(str(root), names, items, None, str(root), notes)


def _csv_dataset(path: Path, classnames: str | None) -> EvalDataset:
    if not path.is_file():
        raise UsageError(f"csv:{path}: no such file")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not {"path", "label"} <= set(reader.fieldnames or []):
            raise UsageError(f"csv:{path}: needs the columns path,label (found {', '.join(reader.fieldnames or [])})")
        rows = [(r["path"], r["label"].strip()) for r in reader if r["path"]]
    resolve = lambda p: p if os.path.isabs(p) else str(path.parent / p)  # noqa: E731
    if classnames is not None:
        names = _classnames_option(classnames)
        index = {n: i for i, n in enumerate(names)}
        try:
            items = [(resolve(p), int(lab) if lab.isdigit() else index[lab]) for p, lab in rows]
        except KeyError as exc:
            raise UsageError(f"csv:{path}: label {exc.args[0]!r} is not in --classnames") from exc
    else:
        names = sorted({lab for _, lab in rows})
        index = {n: i for i, n in enumerate(names)}
        items = [(resolve(p), index[lab]) for p, lab in rows]
    _check_names(names, f"labels of csv:{path}", notes := [])
    return EvalDataset(f"csv:{path}", names, items, None, str(path), notes)


def _check_names(names: list[str], source: str, notes: list[str]) -> None:
    """Data sets may repeat a name (CLIP's curated ImageNet names do: 'missile', 'sunglasses'); scoring is by
    index, so a repeat is a note, while empty names or a single class are errors."""
    from collections import Counter

    repeated = sorted(n for n, k in Counter(names).items() if k > 1)
    if repeated:
        notes.append(f"repeated class names (scored by index): {', '.join(repeated)}")
    check_classnames(list(dict.fromkeys(names)) if len(set(names)) > 1 else names, source)
