"""What `zsclip locate` found, for people: a table, CSV, JSON or JSONL of the segments, a plot of every text's
similarity curve with its segments shaded, and a report page with a strip of frames from each segment."""

from __future__ import annotations

import csv
import html
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import numpy as np

from zsclip.core import atomic
from zsclip.core.errors import UsageError, ZsclipError
from zsclip.core.plots import pyplot
from zsclip.video.container import grab_frames
from zsclip.video.locate import FORMATS, LocateResult, Segment


def render(results: Sequence[LocateResult], fmt: str, out: IO[str]) -> None:
    """json: one object (an array of them for several videos); jsonl: one object per video; csv and table: one
    row per segment, with a video column when there are several videos."""
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt}: use one of {', '.join(FORMATS)}")
    if fmt == "json":
        data = results[0].to_dict() if len(results) == 1 else [r.to_dict() for r in results]
        out.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    elif fmt == "jsonl":
        for r in results:
            out.write(json.dumps(r.to_dict(), ensure_ascii=False) + "\n")
    else:
        several = len(results) > 1
        header = [*(["video"] if several else []), "text", "start", "end", "score", "strength", "found"]
        rows = [[*([r.video] if several else []), *_cells(s)] for r in results for s in r.segments]
        if fmt == "csv":
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(rows)
        else:
            from rich.console import Console
            from rich.markup import escape
            from rich.table import Table

            table = Table(show_edge=False, header_style="bold")
            for name in header:
                table.add_column(name, justify="right" if name in ("start", "end", "score", "strength") else "left")
            for row in rows:
                table.add_row(*map(escape, row))
            Console(file=out, highlight=False, soft_wrap=False).print(table)
    out.flush()


def _cells(s: Segment) -> list[str]:
    return [s.text, f"{s.start:.2f}", f"{s.end:.2f}", f"{s.score:.4f}", f"{s.strength:.2f}", "yes" if s.found else "no"]


def plot_png(result: LocateResult) -> bytes:
    """Every text's similarity curve over time, its segments shaded in the curve's colour."""

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(10, 3.2 + 0.15 * len(result.texts)), dpi=110)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for t, text in enumerate(result.texts):
        colour = colours[t % len(colours)]
        ax.plot(result.times, result.curves[t], color=colour, alpha=0.3, linewidth=0.8)
        ax.plot(result.times, result.smoothed[t], color=colour, linewidth=1.6, label=text)
        for s in result.segments:
            if s.text == text:
                ax.axvspan(s.start, s.end, color=colour, alpha=0.15)
    ax.set_xlim(0, result.duration)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("cosine similarity")
    ax.set_title(os.path.basename(result.video), fontsize=10)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def write_plot(results: Sequence[LocateResult], path: str | os.PathLike) -> list[Path]:
    """One PNG per video: `path` itself for one video, else path-1.png, path-2.png, ... in the videos' order."""
    path = Path(path)
    targets = (
        [path]
        if len(results) == 1
        else [path.with_name(f"{path.stem}-{i + 1}{path.suffix or '.png'}") for i in range(len(results))]
    )
    for result, target in zip(results, targets, strict=True):
        if target.parent != Path():
            target.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_bytes(target, plot_png(result))
    return targets


def write_report(results: Sequence[LocateResult], directory: str | os.PathLike, thumbs: int = 5) -> Path:
    """DIR/result.json (as --format json), DIR/plot-N.png per video and DIR/report.html with the plots and a strip
    of `thumbs` frames from each segment. Returns the HTML's path."""
    import base64

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    data = results[0].to_dict() if len(results) == 1 else [r.to_dict() for r in results]
    atomic.write_text(out / "result.json", json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    e = html.escape
    sections = []
    for n, result in enumerate(results, 1):
        png = plot_png(result)
        atomic.write_bytes(out / f"plot-{n}.png", png)
        times = [s.start + (s.end - s.start) * (q + 0.5) / thumbs for s in result.segments for q in range(thumbs)]
        try:
            pictures = grab_frames(result.video, times, short_side=120) if times else []
        except ZsclipError:  # the video moved or broke since: the report still has the numbers
            pictures = [None] * len(times)
        rows = []
        for i, s in enumerate(result.segments):
            part = slice(i * thumbs, (i + 1) * thumbs)
            strip = "".join(
                f'<img src="data:image/jpeg;base64,{base64.b64encode(_jpeg(p)).decode()}" title="{t:.1f} s">'
                for p, t in zip(pictures[part], times[part], strict=True)
                if p is not None
            )
            rows.append(
                f"<tr><td>{e(s.text)}</td><td>{s.start:.1f}-{s.end:.1f} s</td><td>{s.score:.3f}</td>"
                f'<td class="strip">{strip}</td></tr>'
            )
        notes = "".join(f"<li>{e(w)}</li>" for w in result.warnings)
        sections.append(
            f"<h2>{e(result.video)}</h2><p>{result.duration:.1f} s, {result.frames} frames sampled at "
            f"{result.fps:g} per second</p>{f'<ul>{notes}</ul>' if notes else ''}"
            f'<img class="plot" src="plot-{n}.png" alt="similarity curves">'
            f"<table><tr><th>text</th><th>segment</th><th>score</th><th>frames</th></tr>{''.join(rows)}</table>"
        )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>zsclip locate</title>
<style>
body{{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}}
h2{{font-size:1.1em;margin-top:1.6em;border-bottom:1px solid #ddd}} img.plot{{max-width:100%}}
table{{border-collapse:collapse}} th,td{{padding:.3em .8em;border-bottom:1px solid #eee;text-align:left}}
td.strip img{{height:72px;margin-right:3px}}
</style></head><body><h1>zsclip locate</h1>{"".join(sections)}</body></html>
"""
    atomic.write_text(out / "report.html", page)
    return out / "report.html"


def _jpeg(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=80)
    return buf.getvalue()
