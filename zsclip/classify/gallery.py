"""Classify records -> a gallery to look at: DIR/gallery.html, one section per label (largest first) with
thumbnails, probabilities and the top-k on hover; abstained and skipped files; labels.png, a bar chart of counts.

It streams, so it works for 100k images: each record is appended to DIR/.zsclip-gallery.jsonl and its thumbnail
written to DIR/thumbs/ (small JPEGs, by a few threads) as images are classified; only `close` reads the records
back and writes the pages. gallery.html shows the first `preview` images of each label and links to per-label
pages of `page_size` images (DIR/pages/). Everything is local: relative links to DIR's own files and to the
images themselves, no external URLs, no scripts.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import html
import io
import json
import os
import shutil
import threading
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from zsclip.classify.sort import FolderNames
from zsclip.core import atomic
from zsclip.core.errors import UsageError
from zsclip.core.locks import Lock, probe
from zsclip.core.paths import check_output_dir
from zsclip.core.wording import plural

if TYPE_CHECKING:  # classify imports torch; a sink must not
    from zsclip.classify.predict import Prediction, Skipped

RECORDS = ".zsclip-gallery.jsonl"  # also what marks a folder as a gallery that may be replaced
LOCK = ".zsclip-gallery.lock"  # one run at a time writes a gallery (zsclip.core.locks)
INDEX = "gallery.html"
CHART = "labels.png"
SKIPPED_CSV = "skipped.csv"
SKIPPED_SHOWN = 1000  # skipped files listed in gallery.html; all of them are in skipped.csv
CHART_BARS = 30
ABSTAINED = "abstained"  # section key of images below --threshold (their label is 'unknown')


def check_report_dir(directory: str | os.PathLike, resume: bool = False) -> None:
    """The checks of --report DIR that need no model. A folder holding an earlier gallery is replaced (or
    continued, with `resume`); any other folder with files in it is refused, so no one's files are mixed in."""

    root = check_output_dir(directory, "--report")  # a folder, or one that can be made, that takes files
    if root.is_dir() and not (root / RECORDS).exists() and any(p.name != LOCK for p in root.iterdir()):
        raise UsageError(f"--report {root}: the folder has files in it and no zsclip gallery; use a new folder")
    if root.is_dir():
        probe(root / LOCK, f"--report {root}")


class Gallery:
    """A sink for classify records: `add` each record (with `image`, where the image is now, if a move took it
    elsewhere), then `close` to write the pages. With `resume`, the records of an earlier gallery in DIR are
    kept (a record of a path seen again replaces the earlier one)."""

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        page_size: int = 200,
        preview: int = 48,
        thumb_size: int = 160,
        resume: bool = False,
        workers: int | None = None,
        title: str = "zsclip gallery",
        note: str = "",
    ):
        if page_size < 1 or preview < 1 or thumb_size < 16:
            raise UsageError("gallery: page_size and preview must be at least 1, thumb_size at least 16")
        check_report_dir(directory, resume)
        self.root = Path(directory)
        self.root.mkdir(parents=True, exist_ok=True)
        self._dir_lock = Lock(self.root / LOCK, f"--report {self.root}").acquire()  # one writer at a time
        self.page_size, self.preview, self.thumb_size = page_size, preview, thumb_size
        self.title, self.note = title, note
        continuing = resume and (self.root / RECORDS).exists()
        if not continuing:
            for old in ("thumbs", "pages"):  # an earlier gallery's; check_report_dir made sure DIR is one
                shutil.rmtree(self.root / old, ignore_errors=True)
        (self.root / "thumbs").mkdir(parents=True, exist_ok=True)
        self.count = self._cut_torn(self.root / RECORDS) if continuing else 0
        self._records = open(self.root / RECORDS, "a" if continuing else "w", encoding="utf-8")  # noqa: SIM115
        workers = workers or min(4, os.cpu_count() or 1)  # PIL decodes and encodes with the GIL released
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="thumbs")
        self._pending: deque[Future] = deque()
        self._made: set[str] = set()  # thumbnails on disk, listed at close
        self._lock = threading.Lock()
        self.failed_thumbs = 0

    @staticmethod
    def _cut_torn(path: Path) -> int:
        """Cut a line torn by a kill; the number of records kept (thumbnails are numbered on from there)."""
        data = path.read_bytes()
        keep = data.rfind(b"\n") + 1
        if keep < len(data):
            with open(path, "r+b") as f:
                f.truncate(keep)
        return data[:keep].count(b"\n")

    def add(self, record: Prediction | Skipped, image: str | os.PathLike | None = None) -> None:
        if not hasattr(record, "label"):
            entry = {"path": record.path, "reason": record.reason}
        else:
            n = self.count
            thumb = f"thumbs/{n // 1000:03d}/{n:07d}.jpg"  # 1,000 to a folder: 100k images make 100 folders
            image = os.path.abspath(image if image is not None else record.path)
            entry = {
                "path": record.path,
                "image": image,
                "label": record.label,
                "prob": round(float(record.prob), 6),
                "abstained": bool(record.abstained),
                "top_k": [[t["label"], round(float(t["prob"]), 6)] for t in record.top_k],
                "thumb": thumb,
            }
            self._submit(image, self.root / thumb)
        self.count += 1
        self._records.write(json.dumps(entry) + "\n")  # ASCII escapes: a name that is not UTF-8 survives
        self._records.flush()

    def _submit(self, image: str, thumb: Path) -> None:
        while len(self._pending) >= 64:  # bounded: a slow disk must not queue 100k images in memory
            self._pending.popleft().result()
        self._pending.append(self._pool.submit(self._thumbnail, image, thumb))

    def _thumbnail(self, image: str, thumb: Path) -> None:
        from PIL import Image, ImageOps

        try:
            with Image.open(image) as im:
                im.draft("RGB", (self.thumb_size * 2, self.thumb_size * 2))  # JPEGs decode at 1/2..1/8 size
                im = ImageOps.exif_transpose(im)
                if im.mode not in ("RGB", "L"):
                    rgba = im.convert("RGBA")
                    im = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
                im = im.convert("RGB")
                im.thumbnail((self.thumb_size, self.thumb_size))
                buf = io.BytesIO()
                im.save(buf, "JPEG", quality=80)
        except Exception:  # a thumbnail is not worth failing the run; the page shows a placeholder
            with self._lock:
                self.failed_thumbs += 1
            return
        thumb.parent.mkdir(exist_ok=True)
        tmp = thumb.with_name(f".{thumb.name}.tmp")
        tmp.write_bytes(buf.getvalue())
        os.replace(tmp, thumb)  # a kill leaves a whole thumbnail or none

    # -- the pages ---------------------------------------------------------------------------------------
    def close(self) -> Path:
        """Wait for the thumbnails, then write gallery.html, the label pages, labels.png and skipped.csv."""
        while self._pending:
            self._pending.popleft().result()
        self._pool.shutdown()
        self._records.close()
        predictions, skipped = _read_records(self.root / RECORDS)
        self._made = _thumbnails(self.root)
        groups: dict[str, list[dict]] = {}
        for entry in predictions.values():
            groups.setdefault(ABSTAINED if entry["abstained"] else entry["label"], []).append(entry)
        for entries in groups.values():
            entries.sort(key=lambda e: -e["prob"])  # most confident first; the doubtful ones end each label
        order = sorted((k for k in groups if k != ABSTAINED), key=lambda k: (-len(groups[k]), k))
        if ABSTAINED in groups:
            order.append(ABSTAINED)
        names = FolderNames([ABSTAINED])  # a page name per section; the abstained one cannot be a label's
        pages = self.root / "pages"
        shutil.rmtree(pages, ignore_errors=True)
        sections = []
        for key in order:
            entries = groups[key]
            links = []
            if len(entries) > self.preview:
                pages.mkdir(exist_ok=True)
                links = self._write_pages(key, names[key], entries, pages)
            sections.append(self._section(key, names[key], entries, links))
        _write_skipped(self.root / SKIPPED_CSV, skipped)
        counts = [(_heading(k), len(groups[k])) for k in order]
        atomic.write_bytes(self.root / CHART, labels_png(counts, len(skipped)))
        index = self.root / INDEX
        atomic.write_text(index, self._index(order, groups, sections, skipped))
        self._dir_lock.release()
        return index

    def _write_pages(self, key: str, name: str, entries: list[dict], pages: Path) -> list[str]:
        n = -(-len(entries) // self.page_size)
        files = [f"{name}-{i + 1}.html" for i in range(n)]
        for i, file in enumerate(files):
            chunk = entries[i * self.page_size : (i + 1) * self.page_size]
            nav = _nav(files, i)
            body = (
                f'<p><a href="../{INDEX}#{_attr(_anchor(name))}">&larr; all labels</a></p>'
                f"<h1>{_e(_heading(key))} <small>{plural(len(entries), 'image')}</small></h1>{nav}"
                f'<div class="grid">{"".join(_figure(e, self._made, "../", str(pages)) for e in chunk)}</div>{nav}'
            )
            (pages / file).write_text(
                _page(f"{_heading(key)}: page {i + 1} of {n}", body), encoding="utf-8", errors="surrogateescape"
            )
        return [f"pages/{f}" for f in files]

    def _section(self, key: str, name: str, entries: list[dict], links: list[str]) -> str:
        shown = "".join(_figure(e, self._made, "", str(self.root)) for e in entries[: self.preview])
        more = ""
        if links:
            page_links = " ".join(f'<a href="{_attr(_url(link))}">{i + 1}</a>' for i, link in enumerate(links))
            more = (
                f'<p class="more">showing the {self.preview} most confident of {len(entries):,}; '
                f"all, {self.page_size} to a page: {page_links}</p>"
            )
        hint = " <small>below the threshold; shown with their best guess</small>" if key == ABSTAINED else ""
        return (
            f'<section id="{_attr(_anchor(name))}"><h2>{_e(_heading(key))} <span class="count">'
            f'{len(entries):,}</span>{hint}</h2>{more}<div class="grid">{shown}</div></section>'
        )

    def _index(self, order: list[str], groups: dict, sections: list[str], skipped: list[dict]) -> str:
        names = FolderNames([ABSTAINED])
        total = sum(len(g) for g in groups.values())
        toc = "".join(
            f'<li><a href="#{_attr(_anchor(names[k]))}">{_e(_heading(k))}</a> {len(groups[k]):,}</li>' for k in order
        )
        rows = "".join(f"<tr><td>{_e(s['path'])}</td><td>{_e(s['reason'])}</td></tr>" for s in skipped[:SKIPPED_SHOWN])
        rest = f"<p>{len(skipped) - SKIPPED_SHOWN:,} more in {SKIPPED_CSV}</p>" if len(skipped) > SKIPPED_SHOWN else ""
        skipped_html = (
            f'<section id="skipped"><h2>Skipped <span class="count">{len(skipped):,}</span> '
            f"<small>files that could not be read</small></h2>"
            + (f'<table class="skipped"><tr><th>file</th><th>reason</th></tr>{rows}</table>{rest}' if skipped else "")
            + f'<p><a href="{SKIPPED_CSV}">{SKIPPED_CSV}</a></p></section>'
        )
        abstained = len(groups.get(ABSTAINED, ()))
        summary = (
            f"{total:,} images classified into {_plural(len(order) - (1 if abstained else 0), 'label')}"
            + (f", {abstained:,} abstained" if abstained else "")
            + f", {len(skipped):,} skipped"
        )
        body = (
            f"<h1>{_e(self.title)}</h1><p>{_e(summary)}</p>"
            + (f"<p>{_e(self.note)}</p>" if self.note else "")
            + f'<div class="top"><img class="chart" src="{CHART}" alt="bar chart of images per label">'
            f'<ol class="toc">{toc}<li><a href="#skipped">skipped</a> {len(skipped):,}</li></ol></div>'
            + "".join(sections)
            + skipped_html
        )
        return _page(self.title, body)

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        else:  # a failed run keeps its records and thumbnails for resume; no pages
            with contextlib.suppress(Exception):
                self._pool.shutdown(cancel_futures=True)
                self._records.close()


def _read_records(path: Path) -> tuple[dict[str, dict], list[dict]]:
    predictions: dict[str, dict] = {}
    skipped: dict[str, dict] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if "reason" in entry:
                skipped[entry["path"]] = entry
            else:
                predictions.pop(entry["path"], None)  # seen again (a resumed run): the later record counts
                predictions[entry["path"]] = entry
    return predictions, [s for p, s in skipped.items() if p not in predictions]


def _thumbnails(root: Path) -> set[str]:
    """The thumbnails on disk, as the records name them (one directory listing, not a stat per image)."""
    made = set()
    for folder in os.scandir(root / "thumbs"):
        if folder.is_dir():
            made.update(f"thumbs/{folder.name}/{f.name}" for f in os.scandir(folder.path) if f.name.endswith(".jpg"))
    return made


def _write_skipped(path: Path, skipped: list[dict]) -> None:
    with atomic.atomic_open(path, "w", encoding="utf-8", errors="surrogateescape", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "reason"])
        writer.writerows([s["path"], s["reason"]] for s in skipped)


def labels_png(counts: list[tuple[str, int]], skipped: int = 0) -> bytes:
    """A horizontal bar chart of images per label (the largest CHART_BARS; abstained and skipped in grey)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [(name, n) for name, n in counts if name != _heading(ABSTAINED)]
    bars = [(name, n, "#4a7ab7") for name, n in labels[:CHART_BARS]]
    rest = labels[CHART_BARS:]
    if rest:
        bars.append((f"{len(rest)} more labels", sum(n for _, n in rest), "#9bb5d6"))
    bars += [(name, n, "#999999") for name, n in counts if name == _heading(ABSTAINED)]
    if skipped:
        bars.append(("skipped", skipped, "#cccccc"))
    if not bars:
        bars = [("no images", 0, "#999999")]
    fig, ax = plt.subplots(figsize=(7, 0.24 * len(bars) + 1.0), dpi=100)
    names = [n if len(n) <= 32 else n[:31] + "…" for n, _, _ in bars][::-1]
    values = [v for _, v, _ in bars][::-1]
    ax.barh(range(len(bars)), values, color=[c for _, _, c in bars][::-1])
    ax.set_yticks(range(len(bars)), names, fontsize=8)
    top = max(values) or 1
    for y, v in enumerate(values):
        ax.text(v + top * 0.01, y, f"{v:,}", va="center", fontsize=8)
    ax.set_xlim(0, top * 1.15)
    ax.margins(y=0.01)
    ax.set_xlabel("images")
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


# -- HTML pieces -----------------------------------------------------------------------------------------------
def _e(text: str) -> str:
    return html.escape(str(text), quote=False)


def _attr(text: str) -> str:
    return html.escape(str(text), quote=True)


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def _heading(key: str) -> str:
    return "unknown (abstained)" if key == ABSTAINED else key


def _anchor(name: str) -> str:
    return f"label-{name}"


@functools.lru_cache(maxsize=4096)
def _folder_href(folder: str, start: str) -> str:
    """The link prefix from pages in `start` to files in `folder` (one relpath per folder, not per image)."""
    try:
        return _url(Path(os.path.relpath(folder, start)).as_posix()) + "/"
    except ValueError:  # another drive on Windows
        return Path(folder).as_uri() + "/"


def _url(text: str) -> str:
    """Percent-encoded for an href; a name's bytes that are not UTF-8 are encoded as the bytes they are."""
    return quote(text, errors="surrogateescape")


def _figure(entry: dict, made: set[str], up: str, page_dir: str) -> str:
    """One thumbnail: the image links to the file, the caption gives name and probability, hovering shows the
    top-k (the title attribute). `made`: the thumbnails that exist; `up`: from the page to DIR ('' or '../')."""
    ranked = "\n".join(f"{label}  {prob:.1%}" for label, prob in entry["top_k"])
    name = os.path.basename(entry["path"])
    tip = f"{entry['path']}\n{ranked}"
    guess = f"{_e(entry['top_k'][0][0])} " if entry["abstained"] and entry["top_k"] else ""
    picture = (
        f'<img src="{_attr(up + entry["thumb"])}" alt="{_attr(name)}" loading="lazy">'
        if entry["thumb"] in made
        else '<span class="nothumb">no preview</span>'
    )
    folder, file = os.path.split(entry["image"])
    href = _folder_href(folder, page_dir) + _url(file)
    return (
        f'<figure title="{_attr(tip)}"><a href="{_attr(href)}">{picture}</a>'
        f'<figcaption><span class="name">{_e(name)}</span>{guess}{entry["prob"]:.1%}</figcaption></figure>'
    )


def _nav(files: list[str], i: int) -> str:
    prev = f'<a href="{_attr(_url(files[i - 1]))}">&larr; previous</a>' if i else "<span></span>"
    nxt = f'<a href="{_attr(_url(files[i + 1]))}">next &rarr;</a>' if i + 1 < len(files) else "<span></span>"
    return f'<nav class="pager">{prev}<span>page {i + 1} of {len(files)}</span>{nxt}</nav>'


_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1200px;color:#222;padding:0 1em}
h1{font-size:1.4em} h1 small{font-weight:normal;color:#777;font-size:.7em}
h2{font-size:1.15em;margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:.2em}
h2 small,p.more{font-weight:normal;color:#777;font-size:.85em}
.count{background:#eef2f8;border-radius:1em;padding:0 .6em;font-size:.8em;font-weight:normal}
.top{display:flex;gap:2em;align-items:flex-start;flex-wrap:wrap}
img.chart{flex:0 1 700px;min-width:0;max-width:100%;height:auto;border:1px solid #eee}
ol.toc{flex:1 1 16em;columns:2 12em;column-gap:2em;font-size:.9em;margin:0;max-height:36em;overflow:auto}
.grid{display:flex;flex-wrap:wrap;gap:10px}
figure{margin:0;width:160px;font-size:.78em;text-align:center}
figure img,.nothumb{width:160px;height:160px;object-fit:contain;background:#f4f4f4;display:block;
  image-rendering:auto}
.nothumb{line-height:160px;color:#999}
figcaption{overflow:hidden;white-space:nowrap;text-overflow:ellipsis}
figcaption .name{display:block;overflow:hidden;text-overflow:ellipsis;color:#555}
nav.pager{display:flex;justify-content:space-between;margin:1em 0}
table.skipped{border-collapse:collapse;font-size:.85em}
table.skipped td,table.skipped th{padding:.2em .8em;border-bottom:1px solid #eee;text-align:left;word-break:break-all}
"""


def _page(title: str, body: str) -> str:
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
        f'<meta name="viewport" content="width=device-width,initial-scale=1"><style>{_CSS}</style></head>'
        f"<body>{body}</body></html>\n"
    )


def write_gallery(records: Iterable[Prediction | Skipped], directory: str | os.PathLike, **options) -> Path:
    """Every record into a gallery in `directory` at once (the API's shortcut); returns gallery.html."""
    gallery = Gallery(directory, **options)
    for record in records:
        gallery.add(record)
    return gallery.close()
