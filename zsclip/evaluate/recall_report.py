"""Retrieval results -> files: search.html for a search; metrics.json, ranks.csv and report.html for recall@K."""

from __future__ import annotations

import csv
import html
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import numpy as np

from zsclip.core import atomic
from zsclip.core.errors import UsageError
from zsclip.evaluate.recall import RetrievalResult, summary_dict
from zsclip.evaluate.report import thumbnail, write_csv, write_json
from zsclip.models import ClipModel
from zsclip.retrieval.search import Hit

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.4em} h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0} th,td{padding:.25em .8em;border-bottom:1px solid #eee;text-align:left}
td{font-variant-numeric:tabular-nums} .grid{display:flex;flex-wrap:wrap;gap:10px}
figure{margin:0;width:170px;font-size:.8em} small{color:#777;word-break:break-all}
figure img{width:160px;height:160px;object-fit:contain;background:#f4f4f4;display:block}
td img{width:96px;height:96px;object-fit:contain;background:#f4f4f4}
"""


def _img(path: str, size: int = 160) -> str:
    thumb = thumbnail(path, size)
    return f'<img src="data:image/jpeg;base64,{thumb}" alt="">' if thumb else "<i>(unreadable)</i>"


def _page(title: str, body: str) -> str:
    e = html.escape
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>'
        f"<style>{_STYLE}</style></head><body>\n<h1>{e(title)}</h1>\n{body}\n</body></html>\n"
    )


def write_search_report(hits: Sequence[Hit], out: Path, query: dict) -> Path:
    """search.html in `out`: the query, then every hit's thumbnail, rank, score and path, in rank order."""
    e = html.escape
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    info = "".join(f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>" for k, v in query.items() if v not in (None, []))
    tiles = "".join(
        f"<figure>{_img(h.path)}<figcaption><b>#{h.rank}</b> {h.score:.4f}<br>"
        f"<small>{e(h.path)}</small></figcaption></figure>"
        for h in hits
    )
    body = f'<table>{info}</table>\n<h2>{len(hits)} results</h2><div class="grid">{tiles or "<p>none</p>"}</div>'
    path = out / "search.html"
    atomic.write_text(path, _page(f"zsclip search: {query.get('query') or query.get('image') or ''}", body))
    return path


def write_retrieval_report(result: RetrievalResult, out: Path, model: ClipModel, worst: int = 20) -> dict:
    """metrics.json (the summary), ranks.csv (per query: the rank of the first correct item and the best
    retrieved one), skipped.csv and report.html (metrics, the worst queries both ways, with thumbnails)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = summary_dict(result, model)
    write_json(out / "metrics.json", summary)
    rows = [
        ["text_to_image", c, result.images[o], int(r), result.images[t]]
        for c, o, r, t in zip(result.captions, result.caption_image, result.text_ranks, result.text_top, strict=True)
    ]
    first_caption = {}
    for j, o in enumerate(result.caption_image.tolist()):
        first_caption.setdefault(o, j)
    rows += [
        ["image_to_text", p, result.captions[first_caption[i]], int(r), result.captions[t]]
        for i, (p, r, t) in enumerate(zip(result.images, result.image_ranks, result.image_top, strict=True))
    ]
    write_csv(out / "ranks.csv", ["direction", "query", "correct", "rank", "top"], rows)
    write_csv(out / "skipped.csv", ["path", "reason"], result.skipped)
    atomic.write_text(out / "report.html", _html(summary, result, worst))
    return summary


def _html(summary: dict, result: RetrievalResult, worst: int) -> str:
    e = html.escape
    info = [
        ("model", summary["model"]),
        ("computed with", f"{summary['backend']}, {summary['precision']}"),
        ("data set", summary["dataset_source"]),
        ("images", summary["images"]),
        ("captions", summary["captions"]),
        ("files skipped", summary["skipped"]),
    ]
    info_rows = "".join(f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>" for k, v in info)
    ks = result.recall_k
    metric_rows = "".join(
        f"<tr><th>R@{k}</th><td>{summary['metrics'][f'image_retrieval_recall@{k}']:.2%}</td>"
        f"<td>{summary['metrics'][f'text_retrieval_recall@{k}']:.2%}</td></tr>"
        for k in ks
    )
    t_order = np.argsort(-result.text_ranks, kind="stable")[:worst]
    t_rows = "".join(
        f"<tr><td>{e(result.captions[j])}</td><td>{int(result.text_ranks[j])}</td>"
        f"<td>{_img(result.images[result.caption_image[j]], 96)}</td>"
        f"<td>{_img(result.images[result.text_top[j]], 96)}</td></tr>"
        for j in t_order
        if result.text_ranks[j] > 1
    )
    i_order = np.argsort(-result.image_ranks, kind="stable")[:worst]
    i_rows = "".join(
        f"<tr><td>{_img(result.images[i], 96)}<br><small>{e(os.path.basename(result.images[i]))}</small></td>"
        f"<td>{int(result.image_ranks[i])}</td>"
        f"<td>{e('; '.join(c for c, o in zip(result.captions, result.caption_image, strict=True) if o == i))}</td>"
        f"<td>{e(result.captions[result.image_top[i]])}</td></tr>"
        for i in i_order
        if result.image_ranks[i] > 1
    )
    body = f"""<table>{info_rows}</table>
<table><tr><th></th><th>text &rarr; image (image_retrieval)</th><th>image &rarr; text (text_retrieval)</th></tr>
{metric_rows}</table>
<h2>Worst captions (text &rarr; image): rank of the correct image</h2>
<table><tr><th>caption</th><th>rank</th><th>correct image</th><th>retrieved first</th></tr>{t_rows or ""}</table>
{"" if t_rows else "<p>every caption found its image first</p>"}
<h2>Worst images (image &rarr; text): rank of the first correct caption</h2>
<table><tr><th>image</th><th>rank</th><th>its captions</th><th>retrieved first</th></tr>{i_rows or ""}</table>
{"" if i_rows else "<p>every image found one of its captions first</p>"}"""
    return _page(f"zsclip retrieval eval: {summary['dataset']}", body)


def write_hits(hits: Sequence[Hit], fmt: str, stream: IO[str]) -> None:
    """Search results as a table (for people), csv, json (one array) or jsonl; columns rank, path, score."""
    records = [h.to_dict() for h in hits]
    if fmt == "jsonl":
        stream.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    elif fmt == "json":
        stream.write(json.dumps(records, indent=2, ensure_ascii=False) + "\n")
    elif fmt == "csv":
        writer = csv.writer(stream)
        writer.writerow(["rank", "path", "score"])
        writer.writerows([r["rank"], r["path"], r["score"]] for r in records)
    elif fmt == "table":
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table

        table = Table(show_edge=False, header_style="bold")
        table.add_column("rank", justify="right")
        table.add_column("score", justify="right")
        table.add_column("path", overflow="fold")
        for h in hits:
            table.add_row(str(h.rank), f"{h.score:.4f}", escape(h.path))
        Console(file=stream, highlight=False, soft_wrap=False).print(table)
    else:
        raise UsageError(f"--format {fmt}: use one of table, csv, json, jsonl")
    stream.flush()
