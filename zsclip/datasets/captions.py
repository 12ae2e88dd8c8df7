"""Caption data sets for retrieval: `filepath,caption` rows (open_clip's CsvDataset layout, what `zsclip data
shapes` writes), several rows per image allowed, paths relative to the CSV; or a webdataset caption set."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from zsclip.core.errors import UsageError
from zsclip.datasets.webdataset import load_wds


@dataclass
class CaptionData:
    name: str
    source: str  # the CSV file
    images: list[str]  # image paths, in first-appearance order
    captions: list[str]
    caption_image: list[int]  # per caption, the index of its image


def load_captions(data: str | os.PathLike, *, root: str | None = None, split: str = "test") -> CaptionData:
    """A captions CSV, `csv:FILE`, a folder holding captions.csv, or a webdataset caption set (`wds:DIR`,
    `wds/NAME`: images are shard members, see zsclip.datasets.webdataset)."""
    spec = str(data)
    if spec.startswith(("wds:", "wds/")):
        shards = load_wds(spec, root=root, split=split, task="retrieval")
        return CaptionData(shards.name, shards.source, shards.images, shards.captions, shards.caption_image)
    path = Path(spec[4:] if spec.startswith("csv:") else spec).expanduser()
    if path.is_dir():
        if not (path / "captions.csv").is_file():
            raise UsageError(f"{spec}: no captions.csv in this folder (retrieval needs filepath,caption rows)")
        path = path / "captions.csv"
    if not path.is_file():
        raise UsageError(f"{spec}: no such captions file or folder")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UsageError(f"{path}: cannot read the captions CSV ({exc})") from exc
    header = [c.strip().lower() for c in rows[0]] if rows else []
    if "filepath" not in header or "caption" not in header:
        found = ",".join(rows[0]) if rows else "an empty file"
        raise UsageError(f"{path}: the header must name the columns filepath and caption, found {found!r}")
    fcol, ccol = header.index("filepath"), header.index("caption")
    images: dict[str, int] = {}
    captions, owner = [], []
    for lineno, row in enumerate(rows[1:], 2):
        if not any(c.strip() for c in row):
            continue
        if len(row) <= max(fcol, ccol) or not row[fcol].strip() or not row[ccol].strip():
            raise UsageError(f"{path}, line {lineno}: needs a filepath and a caption, found {row}")
        image = str(path.parent / row[fcol].strip())
        captions.append(row[ccol].strip())
        owner.append(images.setdefault(image, len(images)))
    if not captions:
        raise UsageError(f"{path}: no captions (rows of filepath,caption)")
    return CaptionData(path.parent.name or str(path), str(path), list(images), captions, owner)
