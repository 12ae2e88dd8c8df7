"""The few-shot curve as files: curve.png (the CLIP paper's Figure 6 for one data set: held-out top-1 against shots
per class, one curve per method from zero-shot as the first point, the spread over seeds as error bars), curve.csv
and curve.json."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from zsclip.core import atomic
from zsclip.core.plots import figure_png, pyplot


def write_curve(rows: list[dict], folder: Path, title: str, about: dict) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic.write_text(folder / "curve.json", json.dumps({**about, "curve": rows}, indent=2) + "\n")
    out = io.StringIO()
    writer = csv.DictWriter(out, ["shots", "method", "acc1", "std", "seeds"])
    writer.writeheader()
    writer.writerows(rows)
    atomic.write_text(folder / "curve.csv", out.getvalue())
    atomic.write_bytes(folder / "curve.png", plot(rows, title))


def plot(rows: list[dict], title: str) -> bytes:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    zero = next((r for r in rows if r["shots"] == 0 and r["acc1"] is not None), None)
    points = [r for r in rows if r["shots"] > 0 and r["acc1"] is not None]
    for method in dict.fromkeys(r["method"] for r in points):
        mine = [r for r in points if r["method"] == method]
        start = [] if zero is None else [zero]  # each curve starts at zero-shot
        x = [r["shots"] for r in start + mine]
        y = [100 * r["acc1"] for r in start + mine]
        err = [100 * r["std"] for r in start + mine]
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=method)
    if zero is not None:
        ax.axhline(100 * zero["acc1"], color="grey", linestyle="--", label=f"zero-shot {100 * zero['acc1']:.1f}%")
        ax.plot([0], [100 * zero["acc1"]], marker="*", color="black", markersize=10)
    ax.set_xscale("symlog", linthresh=1)
    ticks = [0, *sorted({r["shots"] for r in points})]
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.set_xlabel("labelled images per class")
    ax.set_ylabel("held-out top-1 (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return figure_png(fig)
