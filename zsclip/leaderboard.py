"""A grid's rows -> a models x data sets table, the mean over data sets per model, and a heatmap (PNG), in one
self-contained HTML page."""

from __future__ import annotations

import base64
import html


def table(rows: list[dict], metric: str) -> tuple[list[str], list[str], dict[tuple[str, str], float | None]]:
    """Models (best mean first), data sets (grid order) and each cell's value (None: failed or missing)."""
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    cells = {(r["model"], r["dataset"]): (None if r["error"] else r["metrics"].get(metric)) for r in rows}
    models = list(dict.fromkeys(r["model"] for r in rows))
    models.sort(key=lambda m: -(mean(cells, m, datasets) or -1.0))
    return models, datasets, cells


def mean(cells: dict, model: str, datasets: list[str]) -> float | None:
    """The mean over data sets; None unless every data set has a value (a partial mean would mislead)."""
    values = [cells.get((model, d)) for d in datasets]
    return None if any(v is None for v in values) else sum(values) / len(values)


def heatmap_png(rows: list[dict], metric: str) -> bytes:
    from .report import _plt, figure_png

    plt = _plt()
    models, datasets, cells = table(rows, metric)
    import numpy as np

    grid = np.array([[np.nan if cells.get((m, d)) is None else cells[(m, d)] for d in datasets] for m in models])
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(datasets) + 3), max(2.5, 0.5 * len(models) + 1.5)), dpi=110)
    im = ax.imshow(np.ma.masked_invalid(grid), cmap="viridis", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(datasets)), [_short(d) for d in datasets], rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(models)), [_short(m) for m in models], fontsize=8)
    for i in range(len(models)):
        for j in range(len(datasets)):
            v = grid[i, j]
            text, color = ("failed", "red") if np.isnan(v) else (f"{v:.1%}", "white" if v < 0.6 else "black")
            ax.text(j, i, text, ha="center", va="center", fontsize=8, color=color)
    ax.set_title(f"{metric} per model and data set", fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return figure_png(fig)


def _short(text: str, n: int = 32) -> str:
    return text if len(text) <= n else "…" + text[-(n - 1) :]


def leaderboard_html(rows: list[dict], metric: str, png: bytes) -> str:
    e = html.escape
    models, datasets, cells = table(rows, metric)
    head = "".join(f"<th>{e(d)}</th>" for d in datasets)
    body = []
    for rank, m in enumerate(models, 1):
        tds = []
        for d in datasets:
            v = cells.get((m, d))
            error = next((r["error"] for r in rows if r["model"] == m and r["dataset"] == d and r["error"]), "")
            tds.append(f"<td>{v:.2%}</td>" if v is not None else f'<td class="err" title="{e(error)}">failed</td>')
        avg = mean(cells, m, datasets)
        shown = "" if avg is None else f"{avg:.2%}"
        body.append(f"<tr><td>{rank}</td><th>{e(m)}</th>{''.join(tds)}<td><b>{shown}</b></td></tr>")
    details = "".join(
        f"<tr><td>{e(r['model'])}</td><td>{e(r['dataset'])}</td><td>{e(str(r['templates']))}</td><td>{r['n']}</td>"
        f"<td>{r['seconds']:.1f}</td><td>{e(r['error'] or '')}</td></tr>"
        for r in rows
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>zsclip leaderboard</title>
<style>
body{{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}}
table{{border-collapse:collapse;margin:.5em 0}} th,td{{padding:.3em .8em;border-bottom:1px solid #eee;text-align:left}}
td{{font-variant-numeric:tabular-nums}} td.err{{color:#b00}} img{{max-width:100%}}
</style></head><body>
<h1>Leaderboard: {e(metric)}</h1>
<p>{len(models)} models x {len(datasets)} data sets; the mean is over all data sets (empty when a pair failed).</p>
<table><tr><th>#</th><th>model</th>{head}<th>mean</th></tr>{"".join(body)}</table>
<img src="data:image/png;base64,{base64.b64encode(png).decode()}" alt="heatmap of {e(metric)}">
<h2>Pairs</h2>
<table><tr><th>model</th><th>data set</th><th>templates</th><th>images</th><th>seconds</th><th>error</th></tr>
{details}</table>
</body></html>
"""
