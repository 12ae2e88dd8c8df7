"""What a data set name stands for now: the identity of the files it is made of (zsclip.store.identity), for a grid's
resume key."""

from __future__ import annotations

import os
from pathlib import Path

from zsclip.datasets.local import csv_files
from zsclip.datasets.named import ALIASES, on_disk
from zsclip.store.identity import files_identity, manifest_digest, tree_identity


def dataset_identity(
    name: str,
    *,
    root: str | None = None,
    split: str = "test",
    classnames: str | None = None,
    templates: str | None = None,
) -> str:
    """What a data set name stands for now, for a grid's resume key (zsclip.store.identity): a folder by the identity of
    every file under it, `csv:FILE` (and a captions CSV) by the CSV and the files it lists, `wds:DIR` by its
    split's shards and its text files, a named set by the copy on disk it would be read from; plus the
    --classnames and --templates files it is scored with. Computed from stat alone, before any model loads: a
    file changed inside a class folder, a shard rewritten, a row of a CSV edited all give another identity."""

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
        parts.append(("csv", files_identity([path, *csv_files(path)], path.parent)))
    elif path.is_dir():
        parts.append(("folder", tree_identity(path)))
    else:
        key = ALIASES.get(name, name)
        copy = on_disk(key, root)
        parts.append(("copy", tree_identity(copy) if copy is not None else "not downloaded"))
    return manifest_digest(parts)
