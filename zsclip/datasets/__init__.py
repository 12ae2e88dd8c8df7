"""Evaluation data sets -> (image path, true class index) items with class names and a default template set.

One module per kind, beside the type they share (`base`: EvalDataset, class-name lists and checks): `named`
(imagenet-v2 and cifar, downloaded or from --root), `local` (an ImageFolder, `csv:FILE`), `webdataset`
(CLIP_benchmark's `wds:DIR` and `wds/NAME`, shards read in place through zsclip.store.shards), `captions` (retrieval
sets), and `identity` (what a data set name stands for now, for a grid's resume key).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from zsclip.core.errors import UsageError
from zsclip.datasets.base import EvalDataset, builtin_classnames, check_names, classnames_option
from zsclip.datasets.captions import CaptionData, load_captions
from zsclip.datasets.identity import dataset_identity
from zsclip.datasets.local import captions_file, csv_dataset, image_folder
from zsclip.datasets.named import ALIASES, NAMED, Remote, cifar, imagenet_v2, named_folder
from zsclip.datasets.webdataset import RetrievalSet, load_wds, wds_task

__all__ = [
    "ALIASES",
    "KINDS",
    "NAMED",
    "CaptionData",
    "EvalDataset",
    "Remote",
    "RetrievalSet",
    "builtin_classnames",
    "captions_file",
    "check_names",
    "classnames_option",
    "dataset_identity",
    "load_captions",
    "load_dataset",
    "load_wds",
    "wds_task",
]


def load_dataset(
    name: str, *, root: str | None = None, classnames: str | None = None, split: str = "test", task: str | None = None
) -> EvalDataset:
    """A data set by name, with its items (image path, true class index), class names and default templates.

    Args:
        name: `wds:DIR`, `wds/NAME` or `csv:FILE` (a kind in KINDS, by prefix), a named set (cifar10, cifar100,
            imagenet-v2, ...), or a folder of class folders (DIR/<class>/<image>).
        root: an existing copy of a named set (no download).
        classnames: a class-names file for a folder or a csv set.
        split, task: for webdataset sets, which alone have several splits and may hold captions.

    Returns:
        An EvalDataset.

    Examples:
        >>> data = zsclip.load_dataset("path/to/folder")
        >>> data.classnames, len(data.items)
    """
    kind = next((prefix for prefix in KINDS if name.startswith(prefix)), None)
    if kind is not None:  # the kind's loader says which splits and tasks it has
        return KINDS[kind](name, root, classnames, split, task)
    test_only(name, split, task)
    key = ALIASES.get(name, name)
    if key in NAMED:
        folder = named_folder(key, root)
        return imagenet_v2(key, folder) if key.startswith("imagenet-v2") else cifar(key, folder)
    path = Path(name).expanduser()
    if path.is_dir():
        return image_folder(path, classnames)
    if not path.exists() and ("/" in name or name.startswith((".", "~"))):
        raise UsageError(f"{name}: no such folder")
    known = ", ".join([*NAMED, "imagenet-v2"])
    raise UsageError(
        f"unknown data set {name!r}: use one of {known}, a folder (DIR/<class>/<image>), csv:FILE, "
        "wds:DIR or wds/NAME (CLIP_benchmark's webdataset data sets)"
    )


def _wds(name: str, root: str | None, classnames: str | None, split: str, task: str | None) -> EvalDataset:
    data = load_wds(name, root=root, split=split, classnames=classnames, task=task)
    if not isinstance(data, EvalDataset):
        raise UsageError(
            f"{name}: a retrieval data set (images with captions, dataset_type.txt): zsclip eval scores "
            "it with --task retrieval; zsclip.datasets.load_wds gives its images and captions"
        )
    return data


def _csv(name: str, root: str | None, classnames: str | None, split: str, task: str | None) -> EvalDataset:
    test_only(name, split, task)
    return csv_dataset(Path(name[len("csv:") :]).expanduser(), classnames)


def test_only(name: str, split: str, task: str | None) -> None:
    """The usage errors of a data set kind with one split of classification images (all but webdataset)."""
    if split != "test":
        raise UsageError(f"--split {split}: only wds:DIR and wds/NAME data sets have splits ({name} has test only)")
    if task not in (None, "classification"):
        raise UsageError(f"--task {task}: {name} is a classification data set")


# Data set kinds by name prefix, each a loader (name, root, classnames, split, task) -> EvalDataset. A new kind is
# a module beside these and one row here (README: "A new data set kind"). A name with no prefix is a named set
# (zsclip.datasets.named) or a folder of class folders (zsclip.datasets.local).
KINDS: dict[str, Callable[[str, str | None, str | None, str, str | None], EvalDataset]] = {
    "wds:": _wds,  # a copy of a CLIP_benchmark webdataset set on disk
    "wds/": _wds,  # a CLIP_benchmark webdataset set by name (downloaded)
    "csv:": _csv,  # filepath,label rows (open_clip's CsvDataset layout)
}
