"""Evaluation results -> files for machines (JSON, CSV) and for people (a PNG and one self-contained HTML page)."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import os
from pathlib import Path

import numpy as np

from zsclip.classify.output import escape_surrogates, readable
from zsclip.core import atomic
from zsclip.core.paths import check_output_dir, writing
from zsclip.core.plots import figure_png, pyplot
from zsclip.evaluate import metrics as M
from zsclip.evaluate.run import Comparison, EvalResult
from zsclip.evaluate.run import summary as summary_dict
from zsclip.models import ClipModel
from zsclip.pipeline.images import to_rgb
from zsclip.store.shards import image_source

FULL_GRID_MAX = 40  # above this many classes the confusion picture shows the most-confused classes only


def write_report(result: EvalResult, out: Path, model: ClipModel) -> dict:
    """Write metrics.json, predictions.csv, per_class.csv, confusion_matrix.csv/.png, most_confused.csv,
    skipped.csv and report.html into `out` (created if missing); returns the summary."""
    out = check_output_dir(out, "--report")
    with writing(out, "--report"):
        return _write_report(result, out, model)


def _write_report(result: EvalResult, out: Path, model: ClipModel) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    names = result.classifier.labels
    n = len(names)
    y_true, y_pred = result.labels, result.topk[:, 0]
    summary = summary_dict(result, model)
    write_json(out / "metrics.json", summary)

    k = result.topk.shape[1]
    rows = [
        [p, names[t], names[pr[0]], f"{pb[0]:.6f}", ";".join(names[i] for i in pr[: min(5, k)])]
        for p, t, pr, pb in zip(result.paths, y_true, result.topk, result.topk_prob, strict=True)
    ]
    write_csv(out / "predictions.csv", ["path", "true", "predicted", "prob", "top5"], rows)

    stats = M.per_class(y_true, y_pred, n)
    per_class_rows = [
        [i, names[i], *(f"{stats[key][i]:.4f}" for key in ("precision", "recall", "f1")), int(stats["support"][i])]
        for i in range(n)
    ]
    write_csv(out / "per_class.csv", ["index", "class", "precision", "recall", "f1", "support"], per_class_rows)

    matrix = M.confusion(y_true, y_pred, n)
    labelled = [[names[i], *matrix[i].tolist()] for i in range(n)]
    write_csv(out / "confusion_matrix.csv", ["true \\ predicted", *names], labelled)
    pairs = M.most_confused(matrix, 50)
    write_csv(
        out / "most_confused.csv",
        ["true", "predicted", "count", "share_of_true"],
        [[names[t], names[p], c, f"{c / max(1, matrix[t].sum()):.4f}"] for t, p, c in pairs],
    )
    write_csv(out / "skipped.csv", ["path", "reason"], result.skipped)
    png = confusion_png(matrix, names)
    atomic.write_bytes(out / "confusion_matrix.png", png)
    atomic.write_text(out / "report.html", readable(_html(summary, result, stats, pairs, png)))  # odd bytes: \xNN
    return summary


def write_json(path: Path, data) -> None:
    atomic.write_text(path, escape_surrogates(json.dumps(data, indent=2, ensure_ascii=False)) + "\n")


def write_csv(path: Path, header: list, rows) -> None:
    # Paths that are not UTF-8 keep their bytes, as in classify's CSV (zsclip.classify.output).
    with atomic.atomic_open(path, "w", newline="", encoding="utf-8", errors="surrogateescape") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


# -- pictures ----------------------------------------------------------------------------------------------
def confusion_png(matrix: np.ndarray, names: list[str]) -> bytes:
    """Row-normalised confusion matrix; with many classes, the sub-matrix of the most-confused classes."""
    plt = pyplot()
    n = len(names)
    title = "Confusion matrix (row-normalised: share of each true class)"
    idx = np.arange(n)
    if n > FULL_GRID_MAX:
        off = matrix.copy()
        np.fill_diagonal(off, 0)
        involvement = off.sum(0) + off.sum(1)
        idx = np.sort(np.argsort(involvement)[::-1][:25])
        title = f"Most-confused 25 of {n} classes (row-normalised over all predictions)"
    sub = matrix[np.ix_(idx, idx)].astype(float)
    rows = matrix[idx].sum(1, keepdims=True).clip(min=1)
    sub = sub / rows
    size = max(5.0, 0.38 * len(idx) + 2.5)
    fig, ax = plt.subplots(figsize=(size + 1.5, size), dpi=110)
    im = ax.imshow(sub, cmap="Blues", vmin=0, vmax=1)
    labels = [names[i] if len(names[i]) <= 22 else names[i][:21] + "…" for i in idx]
    ax.set_xticks(range(len(idx)), labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(idx)), labels, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    if len(idx) <= 25:
        for r in range(len(idx)):
            for c in range(len(idx)):
                if matrix[idx[r], idx[c]]:
                    color = "white" if sub[r, c] > 0.5 else "black"
                    ax.text(c, r, int(matrix[idx[r], idx[c]]), ha="center", va="center", fontsize=7, color=color)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return figure_png(fig)


def comparison_png(comparison: Comparison) -> bytes:
    plt = pyplot()
    rows = comparison.rows
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(rows) + 1.2), dpi=110)
    names = [f"{r['set']} ({r['templates']})" for r in rows][::-1]
    values = [r["acc1"] * 100 for r in rows][::-1]
    ax.barh(names, values, color="#4a7ab7")
    for y, v in enumerate(values):
        ax.text(v, y, f" {v:.1f}%", va="center", fontsize=8)
    ax.set_xlabel("top-1 accuracy (%)")
    ax.set_xlim(0, min(100, max(values) * 1.15 + 1))
    ax.set_title("Template sets compared on the same image embeddings", fontsize=10)
    return figure_png(fig)


def write_comparison(comparison: Comparison, out: Path, context: dict) -> None:
    """Write compare.csv, compare.json and compare.png into `out` (created if missing)."""
    out = check_output_dir(out, "--report")
    with writing(out, "--report"):
        _write_comparison(comparison, out, context)


def _write_comparison(comparison: Comparison, out: Path, context: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    keys = ["set", "templates", "acc1", "acc5", "mean_per_class_recall"]
    write_csv(out / "compare.csv", keys, [[r.get(k, "") for k in keys] for r in comparison.rows])
    write_json(
        out / "compare.json",
        {**context, "sets": comparison.rows, "per_template": comparison.per_template, "greedy": comparison.greedy},
    )
    atomic.write_bytes(out / "compare.png", comparison_png(comparison))


# -- the page ----------------------------------------------------------------------------------------------
def thumbnail(path: str, size: int = 112) -> str | None:
    from PIL import Image

    try:
        with Image.open(image_source(path)) as im:
            im = to_rgb(im)
            im.thumbnail((size, size))
            if im.width < 48:
                im = im.resize((im.width * 3, im.height * 3), Image.NEAREST)
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=85)
    except OSError:
        return None
    return base64.b64encode(buf.getvalue()).decode()


def _spread(indices: list[int], labels: np.ndarray, n: int) -> list[int]:
    """Up to n indices taking true classes in turn, so the examples are not all from the first class."""
    by_class: dict[int, list[int]] = {}
    for i in indices:
        by_class.setdefault(int(labels[i]), []).append(i)
    picked: list[int] = []
    queues = list(by_class.values())
    while len(picked) < n and any(queues):
        for q in queues:
            if q and len(picked) < n:
                picked.append(q.pop(0))
    return picked


def _html(summary: dict, result: EvalResult, stats: dict, pairs, png: bytes) -> str:
    names = result.classifier.labels
    e = html.escape
    m = summary["metrics"]
    metric_rows = "".join(f"<tr><th>{e(k)}</th><td>{v:.2%}</td></tr>" for k, v in m.items())
    info = [
        ("model", summary["model"]),
        ("fingerprint", summary["fingerprint"]),
        ("computed with", f"{summary['backend']}, {summary['precision']}"),
        ("data set", summary["dataset"]),
        ("templates", f"{summary['templates']} ({summary['num_templates']})"),
        ("classes", summary["num_classes"]),
        ("images scored", summary["images"]),
        ("files skipped", summary["skipped"]),
    ]
    info_rows = "".join(f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>" for k, v in info)
    worst = np.argsort(stats["recall"] + (stats["support"] == 0) * 2)[:15]
    worst_rows = "".join(
        f"<tr><td>{e(names[i])}</td><td>{stats['recall'][i]:.1%}</td><td>{stats['precision'][i]:.1%}</td>"
        f"<td>{int(stats['support'][i])}</td></tr>"
        for i in worst
        if stats["support"][i] > 0
    )
    pair_rows = "".join(f"<tr><td>{e(names[t])}</td><td>{e(names[p])}</td><td>{c}</td></tr>" for t, p, c in pairs[:15])
    wrong = _spread([i for i in range(len(result.paths)) if result.topk[i, 0] != result.labels[i]], result.labels, 24)
    tiles = []
    for i in wrong:
        thumb = thumbnail(result.paths[i])
        if thumb:
            tiles.append(
                f'<figure><img src="data:image/jpeg;base64,{thumb}" alt=""><figcaption>'
                f"<b>{e(names[result.topk[i, 0]])}</b> ({result.topk_prob[i, 0]:.0%})<br>"
                f"true: {e(names[result.labels[i]])}<br><small>{e(os.path.basename(result.paths[i]))}</small>"
                "</figcaption></figure>"
            )
    skipped_rows = "".join(f"<tr><td>{e(p)}</td><td>{e(r)}</td></tr>" for p, r in result.skipped[:200])
    notes = "".join(f"<li>{e(n)}</li>" for n in summary["notes"])
    title = f"zsclip eval: {summary['dataset']} ({_kind(summary).lower()})"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}}
h1{{font-size:1.4em}} h2{{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}}
table{{border-collapse:collapse;margin:.5em 0}} th,td{{padding:.25em .8em;border-bottom:1px solid #eee;text-align:left}}
td{{font-variant-numeric:tabular-nums}} .cols{{display:flex;gap:3em;flex-wrap:wrap}}
.grid{{display:flex;flex-wrap:wrap;gap:10px}} figure{{margin:0;width:130px;font-size:.8em}}
figure img{{width:112px;height:112px;object-fit:contain;background:#f4f4f4;display:block}}
img.cm{{max-width:100%;height:auto}} small{{color:#777;word-break:break-all}}
</style></head><body>
<h1>{e(_kind(summary))} evaluation: {e(summary["dataset"])}</h1>
<div class="cols"><table>{info_rows}</table><table>{metric_rows}</table></div>
{f"<ul>{notes}</ul>" if notes else ""}
<h2>Confusion</h2>
<img class="cm" src="data:image/png;base64,{base64.b64encode(png).decode()}" alt="confusion matrix">
<div class="cols">
<div><h2>Worst classes (by recall)</h2><table><tr><th>class</th><th>recall</th><th>precision</th><th>images</th></tr>
{worst_rows}</table></div>
<div><h2>Most confused pairs</h2><table><tr><th>true</th><th>predicted as</th><th>images</th></tr>{pair_rows}</table>
</div></div>
<h2>Misclassified examples</h2><div class="grid">{"".join(tiles) or "<p>none</p>"}</div>
<h2>Skipped files</h2>{f"<table>{skipped_rows}</table>" if skipped_rows else "<p>none</p>"}
</body></html>
"""


def _kind(summary: dict) -> str:
    fitted = summary.get("classifier")
    return f"Few-shot ({fitted['method']}, {fitted['shots']} shots per class)" if fitted else "Zero-shot"
