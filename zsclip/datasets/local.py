"""Data sets on disk: an ImageFolder (DIR/<class>/<image>, class names from classes.tsv, --classnames or the
folder names), `csv:FILE` (path,label rows), and the captions CSV of a retrieval set."""

from __future__ import annotations

import csv
import os
from pathlib import Path

from zsclip.core.errors import UsageError
from zsclip.core.textfiles import csv_rows, read_text
from zsclip.core.wording import plural
from zsclip.datasets.base import EvalDataset, check_names, classnames_option
from zsclip.pipeline.sources import has_image_extension, walk
from zsclip.zeroshot.prompts import parse_class_table


def image_folder(root: Path, classnames: str | None) -> EvalDataset:
    on_disk = [d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")]
    if not on_disk:
        raise UsageError(f"{root}: no class folders (expected the ImageFolder layout DIR/<class>/<image>)")
    notes: list[str] = []
    tsv = root / "classes.tsv"
    table_folders = None
    if classnames is not None:
        names = classnames_option(classnames)
        source = f"--classnames {classnames}"
    elif tsv.is_file():
        table = parse_class_table(read_text(tsv), "\t", str(tsv))
        names, table_folders, source = table.names, table.folders, str(tsv)
    else:
        folders = folder_order(on_disk)
        names, source = [f.replace("_", " ") for f in folders], "folder names"
    notes.append(f"class names from {source}")
    check_names(names, f"class names of {root}", notes)
    folders = assign_folders(root, names, on_disk, table_folders, source, notes)
    items = []
    for label, folder in enumerate(folders):
        if folder is not None:
            items += [(p, label) for p, _ in walk([(str(root / folder), False)]) if has_image_extension(p)]
    return EvalDataset(str(root), names, items, None, str(root), notes)


def _folder_key(name: str) -> str:
    """How a folder name and a class name are matched: '_' is a space, runs of spaces are one, case is ignored."""
    return " ".join(name.replace("_", " ").split()).casefold()


def folder_order(folders: list[str]) -> list[str]:
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
    ordered = folder_order(on_disk)
    if len(names) != len(ordered):
        raise UsageError(f"{root}: {len(ordered)} class folders but {len(names)} class names in {source}")
    if source != "folder names":
        order = "numeric" if all(f.isascii() and f.isdigit() for f in ordered) else "sorted"
        notes.append(f"class names of {source} given to the folders by position, in {order} order")
    return list(ordered)


def csv_dataset(path: Path, classnames: str | None) -> EvalDataset:
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

    def resolve(p: str) -> str:
        return p if os.path.isabs(p) else str(path.parent / p)

    notes: list[str] = []
    if classnames is not None:
        names = classnames_option(classnames)
        items = [(resolve(p), _label_index(lab, names, f"{source}, line {ln}", classnames)) for ln, p, lab in entries]
    else:
        labels = {label for _, _, label in entries}
        names = folder_order(sorted(labels))
        index = {n: i for i, n in enumerate(names)}
        items = [(resolve(p), index[label]) for _, p, label in entries]
    if not items:
        raise UsageError(f"{source}: no rows after the header (expected a row path,label per image)")
    check_names(names, f"labels of {source}", notes)
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


def csv_files(path: Path) -> list[str]:
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
