"""DIR/dupes.html: every duplicate group side by side, the kept file first and marked, each file with its size,
pixels and why; thumbnails in DIR/thumbs/ (WebP), links to the files themselves. Written whole (atomically), so a
killed run leaves the previous page or none."""

from __future__ import annotations

import html
import os
from pathlib import Path
from urllib.parse import quote

from zsclip.core import atomic
from zsclip.core.wording import plural
from zsclip.photos.dupes import DupeRecord
from zsclip.pipeline.images import SkipFile
from zsclip.pipeline.thumbs import target_of, thumbnail

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;background:#fafafa;color:#222}
h1{font-size:1.3em} .summary{color:#555}
section{background:#fff;border:1px solid #ddd;border-radius:8px;margin:1em 0;padding:.8em}
section h2{font-size:1em;margin:0 0 .6em} .tier{font-weight:normal;color:#777}
.row{display:flex;gap:12px;overflow-x:auto}
figure{margin:0;width:230px;flex:none;border:2px solid transparent;border-radius:6px;padding:4px}
figure.keep{border-color:#2a8a3e;background:#eef8f0}
figure img{width:220px;height:220px;object-fit:contain;background:#eee;display:block}
figcaption{font-size:12px;word-break:break-all} .badge{font-weight:bold}
.keep .badge{color:#2a8a3e} .move .badge{color:#a33}
"""


def write_page(
    groups: list[list[DupeRecord]],
    directory: str | os.PathLike,
    title: str = "zsclip dupes",
    moved: dict[str, str] | None = None,
) -> Path:
    """Write DIR/dupes.html (and its thumbnails); returns the page's path. `moved`: where --move-into put files
    (the page links and shows them there)."""
    moved = moved or {}
    root = Path(directory)
    thumbs = root / "thumbs"
    thumbs.mkdir(parents=True, exist_ok=True)
    page = root / "dupes.html"
    sections = [_section(group, thumbs, root, moved) for group in groups]
    files = {r.path for g in groups for r in g}
    kept = {r.path for g in groups for r in g if r.keep}
    tiers = {t: sum(1 for g in groups if g[0].tier == t) for t in ("exact", "near")}
    summary = (
        f"{plural(len(groups), 'group')} ({tiers['exact']} exact, {tiers['near']} near) of "
        f"{plural(len(files), 'file')}: {plural(len(kept), 'file')} kept, {plural(len(files - kept), 'file')} could go."
    )
    body = f"<h1>{html.escape(title)}</h1><p class=summary>{html.escape(summary)}</p>{''.join(sections)}"
    if not groups:
        body += "<p>No duplicates.</p>"
    text = f"<!doctype html><meta charset=utf-8><title>{html.escape(title)}</title><style>{STYLE}</style>{body}\n"
    with atomic.atomic_open(page, "w", encoding="utf-8") as f:
        f.write(text)
    return page


def _section(group: list[DupeRecord], thumbs: Path, root: Path, moved: dict[str, str]) -> str:
    first = group[0]
    tier = "same content" if first.tier == "exact" else "near duplicates"
    figures = "".join(_figure(r, thumbs, root, moved.get(r.path)) for r in group)
    return (
        f"<section id=g{first.group}><h2>Group {first.group} <span class=tier>{tier}, "
        f"{plural(len(group), 'file')}</span></h2><div class=row>{figures}</div></section>"
    )


def _figure(record: DupeRecord, thumbs: Path, root: Path, now: str | None = None) -> str:
    where = now or record.path
    name = _thumbnail(where, thumbs)
    src = f"thumbs/{name}" if name else ""
    href = Path(where).resolve().as_uri()
    badge = "keep" if record.keep else "duplicate"
    image = f"<img src='{html.escape(src)}' alt='' loading=lazy>" if src else "<img alt='(no preview)'>"
    return (
        f"<figure class={'keep' if record.keep else 'move'}><a href='{html.escape(href)}'>{image}</a>"
        f"<figcaption><span class=badge>{badge}</span> {html.escape(os.path.basename(record.path))}<br>"
        f"{record.width}x{record.height}, {record.size:,} bytes<br>{html.escape(record.why)}<br>"
        f"<small>{html.escape(('moved to ' if now else '') + os.path.dirname(where))}</small></figcaption></figure>"
    )


def _thumbnail(path: str, folder: Path) -> str | None:
    """The thumbnail's file name in `folder` (made once per file identity, zsclip.pipeline.thumbs), or None when it
    cannot be made."""
    try:
        target = target_of(path, folder)
        if not target.exists():
            thumbnail(path, folder)
        return quote(target.name)
    except (OSError, SkipFile):
        return None
