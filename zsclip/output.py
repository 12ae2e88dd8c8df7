"""Renderers for prediction records: table (for people), csv, json (one array) and jsonl (one per line).

Writers stream: every record is written (and flushed) as it arrives, except the table, which needs all rows.
"""

from __future__ import annotations

import csv
import json
from typing import IO

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .classify import Prediction

FORMATS = ("table", "csv", "json", "jsonl")


def format_for_path(path: str) -> str | None:
    """The format an output file's extension asks for, if any."""
    for fmt, ext in (("csv", ".csv"), ("jsonl", ".jsonl"), ("json", ".json")):
        if path.lower().endswith(ext):
            return fmt
    return None


def _rounded(pred: Prediction) -> dict:
    record = pred.to_dict()
    record["prob"] = round(record["prob"], 6)
    record["top_k"] = [{"label": t["label"], "prob": round(t["prob"], 6)} for t in record["top_k"]]
    return record


class Writer:
    def __init__(self, stream: IO[str], top_k: int):
        self.stream = stream
        self.top_k = top_k

    def write(self, pred: Prediction) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.stream.flush()


class JsonlWriter(Writer):
    def write(self, pred: Prediction) -> None:
        self.stream.write(json.dumps(_rounded(pred), ensure_ascii=False) + "\n")
        self.stream.flush()


class JsonWriter(Writer):
    def __init__(self, stream: IO[str], top_k: int):
        super().__init__(stream, top_k)
        self.count = 0
        stream.write("[")

    def write(self, pred: Prediction) -> None:
        self.stream.write(("," if self.count else "") + "\n  " + json.dumps(_rounded(pred), ensure_ascii=False))
        self.count += 1
        self.stream.flush()

    def close(self) -> None:
        self.stream.write("\n]\n" if self.count else "]\n")
        super().close()


class CsvWriter(Writer):
    def __init__(self, stream: IO[str], top_k: int):
        super().__init__(stream, top_k)
        self.csv = csv.writer(stream)
        ranked = [col for i in range(1, top_k + 1) for col in (f"label_{i}", f"prob_{i}")]
        self.csv.writerow(["path", "label", "prob", "abstained", *ranked])

    def write(self, pred: Prediction) -> None:
        record = _rounded(pred)
        ranked = [v for t in record["top_k"] for v in (t["label"], t["prob"])]
        self.csv.writerow([record["path"], record["label"], record["prob"], record["abstained"], *ranked])
        self.stream.flush()


class TableWriter(Writer):
    def __init__(self, stream: IO[str], top_k: int):
        super().__init__(stream, top_k)
        self.rows: list[Prediction] = []

    def write(self, pred: Prediction) -> None:
        self.rows.append(pred)

    def close(self) -> None:
        table = Table(show_edge=False, header_style="bold")
        table.add_column("path", overflow="fold")
        table.add_column("label")
        table.add_column("prob", justify="right")
        table.add_column("top-k", overflow="fold")
        for p in self.rows:
            ranked = ", ".join(f"{escape(t['label'])} {t['prob']:.2f}" for t in p.top_k)
            label = f"[dim]{p.label}[/dim]" if p.abstained else escape(p.label)
            table.add_row(escape(p.path), label, f"{p.prob:.3f}", ranked)
        Console(file=self.stream, highlight=False, soft_wrap=False).print(table)
        super().close()


_WRITERS = {"table": TableWriter, "csv": CsvWriter, "json": JsonWriter, "jsonl": JsonlWriter}


def make_writer(fmt: str, stream: IO[str], top_k: int) -> Writer:
    return _WRITERS[fmt](stream, top_k)
