"""A grid's report: a report per pair, results.csv, and the models x data sets table with each model's mean and a
heatmap (PNG), in one self-contained HTML page (leaderboard.html). zsclip.evaluate.grid scores the pairs.

Each cell shows its data set's own main metric: acc1 for a classification set, image-retrieval recall@K for a
caption set. A model's mean is over the data sets that have the grid's main metric (the leaderboard says which),
so a retrieval set beside classification sets neither empties the mean nor is averaged with accuracies."""

from __future__ import annotations

import base64
import csv
import html
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from zsclip.core import atomic
from zsclip.core.plots import figure_png, pyplot
from zsclip.core.wording import plural
from zsclip.evaluate.grid import pair_result, run_grid, score_pair
from zsclip.evaluate.recall import RetrievalResult
from zsclip.evaluate.recall_report import write_retrieval_report
from zsclip.evaluate.report import write_report

RETRIEVAL_MAIN = ("image_retrieval_recall@5", "image_retrieval_recall@1", "image_retrieval_recall@10")


def metric_names(rows: Iterable[dict]) -> list[str]:
    names: list[str] = []
    for row in rows:
        names += [k for k in row["metrics"] if k not in names]
    return names


def main_metric(names: list[str]) -> str | None:
    """The metric a set of rows is ranked by: acc1, else an image-retrieval recall, else the first one."""
    for candidate in ("acc1", *RETRIEVAL_MAIN):
        if candidate in names:
            return candidate
    recalls = [n for n in names if n.startswith("image_retrieval_recall@")]
    return recalls[0] if recalls else (names[0] if names else None)


def short(metric: str) -> str:
    """'image_retrieval_recall@5' -> 'R@5 text→image'."""
    if metric.startswith("image_retrieval_recall@"):
        return f"R@{metric.split('@')[1]} text→image"
    if metric.startswith("text_retrieval_recall@"):
        return f"R@{metric.split('@')[1]} image→text"
    return metric


@dataclass
class Board:
    """The grid as a table: models (best mean first), data sets (grid order), each data set's metric, and cells."""

    models: list[str]
    datasets: list[str]
    metric: str  # the grid's main metric: what the mean is of
    metric_of: dict[str, str]  # data set -> the metric its cells show
    cells: dict[tuple[str, str], float | None]  # None: failed, or no value
    failed: set[tuple[str, str]] = field(default_factory=set)

    @property
    def averaged(self) -> list[str]:
        """The data sets a model's mean is over: those whose cells show the main metric."""
        return [d for d in self.datasets if self.metric_of[d] == self.metric]

    def mean(self, model: str) -> float | None:
        """The mean over `averaged`; None when a pair there failed or has no value (a partial mean would mislead)."""
        values = [self.cells.get((model, d)) for d in self.averaged]
        if not values or any(v is None for v in values):
            return None
        return sum(values) / len(values)

    def shown(self, model: str, dataset: str) -> str:
        value = self.cells.get((model, dataset))
        if value is not None:
            return f"{value:.2%}"
        return "failed" if (model, dataset) in self.failed else "-"

    def mean_label(self) -> str:
        n = len(self.averaged)
        if n == len(self.datasets):
            return f"mean {short(self.metric)}"
        return f"mean {short(self.metric)} ({n} of {len(self.datasets)} sets: {', '.join(self.averaged)})"


def board(rows: list[dict]) -> Board:
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    metric = main_metric(metric_names(rows)) or "acc1"
    metric_of = {}
    for d in datasets:
        names = metric_names(r for r in rows if r["dataset"] == d and not r["error"])
        metric_of[d] = metric if metric in names or not names else main_metric(names)
    cells = {
        (r["model"], r["dataset"]): (None if r["error"] else r["metrics"].get(metric_of[r["dataset"]])) for r in rows
    }
    failed = {(r["model"], r["dataset"]) for r in rows if r["error"]}
    result = Board(list(dict.fromkeys(r["model"] for r in rows)), datasets, metric, metric_of, cells, failed)
    result.models.sort(key=lambda m: -(result.mean(m) if result.mean(m) is not None else -1.0))
    return result


def heatmap_png(rows: list[dict]) -> bytes:
    import numpy as np

    plt = pyplot()
    b = board(rows)

    def value(m: str, d: str) -> float:
        return np.nan if b.cells.get((m, d)) is None else b.cells[(m, d)]

    grid = np.array([[value(m, d) for d in b.datasets] for m in b.models])
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(b.datasets) + 3), max(2.5, 0.5 * len(b.models) + 1.5)), dpi=110)
    im = ax.imshow(np.ma.masked_invalid(grid), cmap="viridis", vmin=0, vmax=1, aspect="auto")
    labels = [_short(d) + ("" if b.metric_of[d] == b.metric else f"\n({short(b.metric_of[d])})") for d in b.datasets]
    ax.set_xticks(range(len(b.datasets)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(b.models)), [_short(m) for m in b.models], fontsize=8)
    for i, m in enumerate(b.models):
        for j, d in enumerate(b.datasets):
            v = grid[i, j]
            text, color = (b.shown(m, d), "red") if np.isnan(v) else (f"{v:.1%}", "white" if v < 0.6 else "black")
            ax.text(j, i, text, ha="center", va="center", fontsize=8, color=color)
    ax.set_title(f"{short(b.metric)} per model and data set", fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return figure_png(fig)


def _computed(row: dict) -> str:
    """The backend and precision a row was computed with (rows from before they were recorded: none)."""
    return ", ".join(str(row[k]) for k in ("backend", "precision") if row.get(k))


def _short(text: str, n: int = 32) -> str:
    return text if len(text) <= n else "…" + text[-(n - 1) :]


def leaderboard_html(rows: list[dict], png: bytes) -> str:
    e = html.escape
    b = board(rows)
    head = "".join(
        f"<th>{e(d)}"
        + ("" if b.metric_of[d] == b.metric else f"<br><small>{e(short(b.metric_of[d]))}</small>")
        + "</th>"
        for d in b.datasets
    )
    body = []
    for rank, m in enumerate(b.models, 1):
        tds = []
        for d in b.datasets:
            shown = b.shown(m, d)
            error = next((r["error"] for r in rows if r["model"] == m and r["dataset"] == d and r["error"]), "")
            tds.append(f'<td class="err" title="{e(error)}">{shown}</td>' if shown == "failed" else f"<td>{shown}</td>")
        avg = b.mean(m)
        body.append(
            f"<tr><td>{rank}</td><th>{e(m)}</th>{''.join(tds)}<td><b>{'' if avg is None else f'{avg:.2%}'}"
            "</b></td></tr>"
        )
    details = "".join(
        f"<tr><td>{e(r['model'])}</td><td>{e(r['dataset'])}</td><td>{e(_computed(r))}</td>"
        f"<td>{e(str(r['templates']))}</td><td>{r['n']}</td><td>{r['seconds']:.1f}</td>"
        f"<td>{e(r['error'] or '')}</td></tr>"
        for r in rows
    )
    computed = sorted({_computed(r) for r in rows if _computed(r)})
    over = ", ".join(b.averaged)
    others = [d for d in b.datasets if d not in b.averaged]
    note = (
        f"The mean is of {e(short(b.metric))} over {e(over) or 'no data set'}"
        + (f"; {e(', '.join(others))} show their own metric and are not averaged" if others else "")
        + ". It is empty for a model with a failed pair among them."
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>zsclip leaderboard</title>
<style>
body{{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}}
table{{border-collapse:collapse;margin:.5em 0}} th,td{{padding:.3em .8em;border-bottom:1px solid #eee;text-align:left}}
td{{font-variant-numeric:tabular-nums}} td.err{{color:#b00}} img{{max-width:100%}}
</style></head><body>
<h1>Leaderboard: {e(short(b.metric))}</h1>
<p>{plural(len(b.models), "model")} x {plural(len(b.datasets), "data set")}. {note}
Computed with {e("; ".join(computed)) or "an unrecorded backend"}.</p>
<table><tr><th>#</th><th>model</th>{head}<th>{e(b.mean_label())}</th></tr>{"".join(body)}</table>
<img src="data:image/png;base64,{base64.b64encode(png).decode()}" alt="heatmap of {e(b.metric)}">
<h2>Pairs</h2>
<table><tr><th>model</th><th>data set</th><th>computed with</th><th>templates</th><th>images</th><th>seconds</th>
<th>error</th></tr>
{details}</table>
</body></html>
"""


# -- the grid's report -------------------------------------------------------------------------------------
def report_pair(clip, name: str, options, folder: Path | None, cache, read, runtime=None) -> dict:
    """zsclip.evaluate.grid's evaluate_pair that also writes the pair's report into `folder` (eval's --report pages)."""

    if folder is None:
        return score_pair(clip, name, options, folder, cache, read, runtime)
    result = pair_result(clip, name, options, cache, read, runtime)
    if isinstance(result, RetrievalResult):
        return write_retrieval_report(result, folder, clip)
    return write_report(result, folder, clip)


def run_grid_report(models: list[str], datasets: list[str], options, *, report: Path | None = None, **kwargs):
    """zsclip.evaluate.grid.run_grid with a report: each pair's pages under report/pairs/, then results.csv, the
    heatmap and
    leaderboard.html for the grid as it stands. Returns the rows."""

    rows = run_grid(models, datasets, options, report=report, evaluate_pair=report_pair, **kwargs)
    if report is not None:
        write_results(report, rows)
    return rows


def write_results(report: Path, rows: list[dict]) -> None:
    """results.csv (one row per pair, every metric a column) and leaderboard.html with its heatmap PNG.
    results.jsonl keeps every attempt; these two show the grid as it stands."""
    metrics = metric_names(rows)
    with atomic.atomic_open(report / "results.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        head = ["model", "fingerprint", "backend", "precision", "dataset", "task", "templates", "n"]
        writer.writerow([*head, *metrics, "seconds", "error"])
        for r in rows:
            values = [r["metrics"].get(m, "") for m in metrics]
            writer.writerow(
                [
                    r["model"],
                    r["fingerprint"],
                    r.get("backend", ""),
                    r.get("precision", ""),
                    r["dataset"],
                    r["task"],
                    r["templates"],
                    r["n"],
                    *values,
                    r["seconds"],
                    r["error"] or "",
                ]
            )
    png = heatmap_png(rows)
    atomic.write_bytes(report / "heatmap.png", png)
    atomic.write_text(report / "leaderboard.html", leaderboard_html(rows, png))
