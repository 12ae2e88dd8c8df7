"""Evaluation data sets -> (image path, true class index) items with class names and a default template set.

Named sets (downloaded into the zsclip cache with a progress bar and a checksum check, or read from `--root`):
  imagenet-v2 (= imagenet-v2/matched-frequency), imagenet-v2/threshold-0.7, imagenet-v2/top-images
  cifar10, cifar100 (test split, torchvision's python format; converted once to PNG files in the cache)
Any folder in ImageFolder layout (DIR/<class>/<image>), with class names from DIR/classes.tsv, `--classnames`, or
the folder names; `csv:FILE` with path,label columns; and CLIP_benchmark's webdataset data sets, `wds:DIR` and
`wds/NAME` (zsclip.wds: shards read in place).
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
from .errors import UsageError, ZsclipError, plural
from .prompts import check_classnames, parse_class_table
from .sources import has_image_extension, walk
from .textfiles import csv_rows, read_text

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

    return read_classes_file(value, "--classnames")


# -- identity ----------------------------------------------------------------------------------------------
def dataset_identity(
    name: str,
    *,
    root: str | None = None,
    split: str = "test",
    classnames: str | None = None,
    templates: str | None = None,
) -> str:
    """What a data set name stands for now, for a grid's resume key (zsclip.identity): a folder by the identity of
    every file under it, `csv:FILE` (and a captions CSV) by the CSV and the files it lists, `wds:DIR` by its
    split's shards and its text files, a named set by the copy on disk it would be read from; plus the
    --classnames and --templates files it is scored with. Computed from stat alone, before any model loads: a
    file changed inside a class folder, a shard rewritten, a row of a CSV edited all give another identity."""
    from .identity import files_identity, manifest_digest, tree_identity

    parts: list[tuple] = [("name", name)]
    for option, value in (("classnames", classnames), ("templates", templates)):
        if value and os.path.isfile(value):
            parts.append((option, files_identity([value])))
    local = name[4:] if name.startswith(("csv:", "wds:")) else name
    path = Path(local).expanduser()
    if name.startswith("wds:") or (name.startswith("wds/") and root is not None):
        folder = path if name.startswith("wds:") else Path(root).expanduser()
        parts.append(("wds", tree_identity(folder / split) if (folder / split).is_dir() else "absent"))
        parts.append(("text", files_identity(sorted(folder.glob("*.txt")), folder)))
    elif name.startswith("csv:") or (path.is_file() and path.suffix.lower() == ".csv"):
        parts.append(("csv", files_identity([path, *_csv_files(path)], path.parent)))
    elif path.is_dir():
        parts.append(("folder", tree_identity(path)))
    else:
        key = ALIASES.get(name, name)
        copy = _on_disk(key, root)
        parts.append(("copy", tree_identity(copy) if copy is not None else "not downloaded"))
    return manifest_digest(parts)


def captions_file(name: str) -> Path | None:
    """The captions CSV `name` is, or holds as captions.csv (a folder that `zsclip data shapes` writes): a CSV
    whose header names filepath and caption columns, as open_clip's CsvDataset reads them. None otherwise."""
    path = Path(name[4:] if name.startswith("csv:") else name).expanduser()
    if path.is_dir():
        path = path / "captions.csv"
    if not path.is_file() or path.suffix.lower() != ".csv":
        return None
    try:
        with open(path, encoding="utf-8-sig", errors="replace", newline="") as f:
            header = next(csv.reader(f), [])
    except OSError:
        return None
    names = {c.strip().lower() for c in header}
    return path if {"filepath", "caption"} <= names else None


def _csv_files(path: Path) -> list[str]:
    """The image files a `csv:` data set or a captions CSV lists (path or filepath column), relative to it."""
    try:
        rows = list(csv_rows(read_text(path, "csv:"), str(path)))
    except (UsageError, OSError):
        return []
    if not rows:
        return []
    header = [c.strip().casefold() for c in rows[0][1]]
    column = next((header.index(c) for c in ("path", "filepath") if c in header), None)
    if column is None:
        return []
    found = [row[column].strip() for _, row in rows[1:] if column < len(row) and row[column].strip()]
    return [f if os.path.isabs(f) else str(path.parent / f) for f in dict.fromkeys(found)]


def _on_disk(key: str, root: str | None) -> Path | None:
    """The folder a named set would be read from, if it is there (nothing is downloaded)."""
    if key in NAMED:
        remote = NAMED[key]
        bases = [Path(root).expanduser()] if root else [cache_dir() / "datasets" / key.replace("/", "-")]
        for candidate in (b / remote.folder for b in bases) if not root else (bases[0] / remote.folder, bases[0]):
            if _looks_ready(key, candidate):
                return candidate
        return None
    if key.startswith("wds/"):
        folder = cache_dir() / "datasets" / "wds" / key[4:].strip("/").replace("/", "-")
        return folder if folder.is_dir() else None
    return None


# -- resolution --------------------------------------------------------------------------------------------
def load_dataset(
    name: str, *, root: str | None = None, classnames: str | None = None, split: str = "test", task: str | None = None
) -> EvalDataset:
    """Resolve a data set name, folder, csv:FILE, wds:DIR or wds/NAME to its items. `split` and `task` apply to
    wds data sets (zsclip.wds), which alone have several splits and may hold captions instead of classes."""
    if name.startswith(("wds:", "wds/")):
        return _wds(name, root, classnames, split, task)
    if split != "test":
        raise UsageError(f"--split {split}: only wds:DIR and wds/NAME data sets have splits ({name} has test only)")
    if task not in (None, "classification"):
        raise UsageError(f"--task {task}: {name} is a classification data set")
    key = ALIASES.get(name, name)
    if key in NAMED:
        folder = _locate(key, root)
        if key.startswith("imagenet-v2"):
            return _imagenet_v2(key, folder)
        return _cifar(key, folder)
    if name.startswith("csv:"):
        return _csv_dataset(Path(name[4:]).expanduser(), classnames)
    path = Path(name).expanduser()
    if path.is_dir():
        return _image_folder(path, classnames)
    known = ", ".join([*NAMED, "imagenet-v2"])
    raise UsageError(
        f"unknown data set {name!r}: use one of {known}, a folder (DIR/<class>/<image>), csv:FILE, "
        "wds:DIR or wds/NAME (CLIP_benchmark's webdataset data sets)"
    )


def _wds(name: str, root: str | None, classnames: str | None, split: str, task: str | None) -> EvalDataset:
    from .wds import load_wds

    data = load_wds(name, root=root, split=split, classnames=classnames, task=task)
    if not isinstance(data, EvalDataset):
        raise UsageError(
            f"{name}: a retrieval data set (images with captions, dataset_type.txt): zsclip eval scores "
            "classification data sets so far; zsclip.wds.load_wds gives its images and captions"
        )
    return data


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
    on_disk = [d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")]
    if not on_disk:
        raise UsageError(f"{root}: no class folders (expected the ImageFolder layout DIR/<class>/<image>)")
    notes: list[str] = []
    tsv = root / "classes.tsv"
    table_folders = None
    if classnames is not None:
        names = _classnames_option(classnames)
        source = f"--classnames {classnames}"
    elif tsv.is_file():
        table = parse_class_table(read_text(tsv), "\t", str(tsv))
        names, table_folders, source = table.names, table.folders, str(tsv)
    else:
        folders = _folder_order(on_disk)
        names, source = [f.replace("_", " ") for f in folders], "folder names"
    notes.append(f"class names from {source}")
    _check_names(names, f"class names of {root}", notes)
    folders = assign_folders(root, names, on_disk, table_folders, source, notes)
    items = []
    for label, folder in enumerate(folders):
        if folder is not None:
            items += [(p, label) for p, _ in walk([(str(root / folder), False)]) if has_image_extension(p)]
    return EvalDataset(str(root), names, items, None, str(root), notes)


def _folder_key(name: str) -> str:
    """How a folder name and a class name are matched: '_' is a space, runs of spaces are one, case is ignored."""
    return " ".join(name.replace("_", " ").split()).casefold()


def _folder_order(folders: list[str]) -> list[str]:
    """Sorted; by number when every folder is named by one (0, 1, ..., 10: not 0, 1, 10, 2)."""
    if all(f.isascii() and f.isdigit() for f in folders):
        return sorted(folders, key=lambda f: (int(f), f))
    return sorted(folders)


def assign_folders(
    root: Path, names: list[str], on_disk: list[str], table_folders: list[str] | None, source: str, notes: list[str]
) -> list[str | None]:
    """The folder of each class (None: a class with no folder). One rule for every source of names:
    1. a class table's `folder` column, row by row;
    2. else by name, when every folder is named like a class (`red_star`, `Red Star` -> 'red star');
    3. else by position: the i-th folder in sorted order (by number when all are numbers) is class i.
    A folder matching no class while others do is an error, not a silent shift of every label after it."""
    if table_folders is not None:
        missing = [f for f in table_folders if f not in on_disk]
        if missing:
            raise UsageError(f"{source}: folder {missing[0]!r} is not under {root} ({len(missing)} missing)")
        left_out = sorted(set(on_disk) - set(table_folders))
        if left_out:
            notes.append(f"{len(left_out)} folders not in {source} are left out: {', '.join(left_out[:5])}")
        return list(table_folders)
    keys = [_folder_key(n) for n in names]
    by_key = {k: i for i, k in enumerate(keys)}
    matched = [f for f in on_disk if _folder_key(f) in by_key]
    if matched and len(by_key) == len(keys) and len({_folder_key(f) for f in on_disk}) == len(on_disk):
        unmatched = sorted(set(on_disk) - set(matched))
        if unmatched:
            raise UsageError(
                f"{source}: folder {unmatched[0]!r} matches no class name while {len(matched)} folders do "
                f"({len(unmatched)} unmatched); rename it or remove it"
            )
        folders: list[str | None] = [None] * len(names)
        for f in on_disk:
            folders[by_key[_folder_key(f)]] = f
        empty = [n for n, f in zip(names, folders, strict=True) if f is None]
        if empty:
            notes.append(
                f"{plural(len(empty), 'class', 'classes')} without a folder (no images): {', '.join(empty[:5])}"
            )
        return folders
    ordered = _folder_order(on_disk)
    if len(names) != len(ordered):
        raise UsageError(f"{root}: {len(ordered)} class folders but {len(names)} class names in {source}")
    if source != "folder names":
        order = "numeric" if all(f.isascii() and f.isdigit() for f in ordered) else "sorted"
        notes.append(f"class names of {source} given to the folders by position, in {order} order")
    return list(ordered)


def _csv_dataset(path: Path, classnames: str | None) -> EvalDataset:
    source = f"csv:{path}"
    if not path.is_file():
        raise UsageError(f"{source}: no such file")
    rows = list(csv_rows(read_text(path, "csv:"), source))
    if not rows:
        raise UsageError(f"{source}: empty (expected a header path,label and a row per image)")
    header = [c.strip().casefold() for c in rows[0][1]]
    if not {"path", "label"} <= set(header):
        raise UsageError(f"{source}: needs the columns path,label (found {', '.join(rows[0][1])})")
    pcol, lcol = header.index("path"), header.index("label")
    entries = []
    for lineno, row in rows[1:]:
        p = row[pcol].strip() if pcol < len(row) else ""
        label = row[lcol].strip() if lcol < len(row) else ""
        if not p:
            raise UsageError(f"{source}, line {lineno}: no path (expected path,label)")
        if not label:
            raise UsageError(f"{source}, line {lineno}: no label for {p!r} (expected path,label)")
        entries.append((lineno, p, label))
    resolve = lambda p: p if os.path.isabs(p) else str(path.parent / p)  # noqa: E731
    notes: list[str] = []
    if classnames is not None:
        names = _classnames_option(classnames)
        items = [(resolve(p), _label_index(lab, names, f"{source}, line {ln}", classnames)) for ln, p, lab in entries]
    else:
        labels = {label for _, _, label in entries}
        names = _folder_order(sorted(labels))
        index = {n: i for i, n in enumerate(names)}
        items = [(resolve(p), index[label]) for _, p, label in entries]
    if not items:
        raise UsageError(f"{source}: no rows after the header (expected a row path,label per image)")
    _check_names(names, f"labels of {source}", notes)
    return EvalDataset(source, names, items, None, str(path), notes)


def _label_index(label: str, names: list[str], where: str, classnames: str) -> int:
    """A csv: label with --classnames: a class index (0-based) or a class name."""
    if label.isascii() and label.isdigit():
        if int(label) >= len(names):
            raise UsageError(
                f"{where}: label {label} is out of range: --classnames {classnames} has {len(names)} classes "
                f"(0..{len(names) - 1})"
            )
        return int(label)
    at = [i for i, n in enumerate(names) if n == label]
    if not at:
        raise UsageError(f"{where}: label {label!r} is not in --classnames {classnames}")
    if len(at) > 1:
        raise UsageError(f"{where}: label {label!r} names {len(at)} classes of --classnames ({at}); give the index")
    return at[0]


def _check_names(names: list[str], source: str, notes: list[str]) -> None:
    """Data sets may repeat a name (CLIP's curated ImageNet names do: 'missile', 'sunglasses'); scoring is by
    index, so a repeat is a note, while empty names or a single class are errors."""
    from collections import Counter

    repeated = sorted(n for n, k in Counter(names).items() if k > 1)
    if repeated:
        notes.append(f"repeated class names (scored by index): {', '.join(repeated)}")
    check_classnames(names, source)
