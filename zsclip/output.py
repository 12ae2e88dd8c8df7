"""Renderers for prediction records: table (for people), csv, json (one array) and jsonl (one per line), and the
crash-safe output file behind `--output FILE [--resume]`.

Writers stream: every record is written (and flushed) as it arrives, except the table, which needs all rows.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import time
from pathlib import Path
from typing import IO

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import atomic
from .classify import Prediction
from .errors import UsageError


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


def csv_header(top_k: int) -> list[str]:
    ranked = [col for i in range(1, top_k + 1) for col in (f"label_{i}", f"prob_{i}")]
    return ["path", "label", "prob", "abstained", *ranked]


class CsvWriter(Writer):
    def __init__(self, stream: IO[str], top_k: int, header: bool = True):
        super().__init__(stream, top_k)
        self.csv = csv.writer(stream)
        if header:
            self.csv.writerow(csv_header(top_k))

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


def make_writer(fmt: str, stream: IO[str], top_k: int, header: bool = True) -> Writer:
    if fmt == "csv":
        return CsvWriter(stream, top_k, header)
    return _WRITERS[fmt](stream, top_k)


RESUMABLE = ("csv", "jsonl")


class OutputFile:
    """`--output FILE`: records go to FILE.partial as they come (flushed at once, fsynced every few seconds), and
    FILE appears, complete, only when the run ends. A killed run leaves FILE.partial behind; `resume` continues
    it: its complete records are kept, a torn last line is cut, and their paths are left out of the new run.
    The run's settings sit beside it (FILE.partial.json), so a resume with other classes, templates or model
    is refused instead of mixing two runs in one file."""

    SYNC_EVERY = 5.0  # seconds between fsyncs: what a power cut may cost; kill -9 costs nothing

    def __init__(self, path: Path, fmt: str, settings: dict, resume: bool = False):
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.meta = self.path.with_name(self.path.name + ".partial.json")
        self.fmt = fmt
        self.settings = json.loads(json.dumps(settings))  # as it reads back: tuples become lists
        self.done: set[str] = set()
        self.preflight(path, fmt, resume)
        continuing = resume and self.partial.exists()
        if continuing:
            self._check_settings()
            self.done = self._read_done(settings.get("top_k", 1))
        else:
            atomic.write_text(self.meta, json.dumps(self.settings, ensure_ascii=False, indent=1) + "\n")
        # Open for the whole run; finish() or abandon() closes it.
        self.stream = open(self.partial, "a" if continuing else "w", encoding="utf-8", newline="")  # noqa: SIM115
        self.appending = continuing and self.partial.stat().st_size > 0  # csv: the header is there already
        self._synced = time.monotonic()

    @staticmethod
    def preflight(path: Path, fmt: str, resume: bool) -> bool:
        """The checks that need no model, so a mistake costs no loading: True when a resumed FILE is complete
        already and there is nothing to do."""
        partial = Path(f"{path}.partial")
        if resume and fmt not in RESUMABLE:
            raise UsageError(f"--resume: {fmt} output cannot be continued; use --format csv or jsonl")
        if not resume and partial.exists():
            raise UsageError(
                f"{partial} holds an unfinished run: add --resume to continue it, or delete it to start over"
            )
        return resume and Path(path).exists() and not partial.exists()

    def _check_settings(self) -> None:
        try:
            before = json.loads(self.meta.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            before = None
        if not isinstance(before, dict):
            raise UsageError(f"{self.meta} is missing or damaged: cannot tell how {self.partial} was made; delete both")
        changed = [k for k in self.settings if before.get(k) != self.settings[k]]
        if changed:
            raise UsageError(
                f"--resume: {self.partial} was made with other {', '.join(changed)}; "
                "use the same options, or delete it to start over"
            )

    def _read_done(self, top_k: int) -> set[str]:
        """Paths of the complete records in FILE.partial; cuts it after the last complete one."""
        data = self.partial.read_bytes()
        keep = data.rfind(b"\n") + 1  # a line without its newline was torn by the kill
        text = data[:keep].decode("utf-8", errors="replace")
        done: set[str] = set()
        if self.fmt == "jsonl":
            offset = 0
            for line in text.splitlines(keepends=True):
                try:
                    done.add(json.loads(line)["path"])
                except (ValueError, KeyError, TypeError):
                    break
                offset += len(line.encode("utf-8"))
            keep = offset
        else:
            rows = list(csv.reader(io.StringIO(text)))
            if rows and rows[0] != csv_header(top_k):
                raise UsageError(f"--resume: {self.partial} has other columns; use the same --top-k or delete it")
            done = {row[0] for row in rows[1:] if row}
        if keep < len(data):
            with open(self.partial, "r+b") as f:
                f.truncate(keep)
        return done

    def tick(self) -> None:
        """After each record: durable every few seconds, so a power cut costs seconds, not the run."""
        if time.monotonic() - self._synced > self.SYNC_EVERY:
            self.stream.flush()
            os.fsync(self.stream.fileno())
            self._synced = time.monotonic()

    def finish(self) -> None:
        """The run is complete: FILE.partial becomes FILE."""
        self.stream.flush()
        os.fsync(self.stream.fileno())
        self.stream.close()
        os.replace(self.partial, self.path)
        self.meta.unlink(missing_ok=True)
        atomic.fsync_dir(self.path.parent)

    def discard(self) -> None:
        """Nothing was recorded: leave no FILE.partial to trip the next run."""
        self.abandon()
        self.partial.unlink(missing_ok=True)
        self.meta.unlink(missing_ok=True)

    def abandon(self) -> None:
        """The run stopped early: keep FILE.partial (flushed) for --resume."""
        # On a full disk the flush fails again; what reached the file is kept (a torn last line is cut on resume).
        with contextlib.suppress(OSError):
            self.stream.flush()
        with contextlib.suppress(OSError):
            self.stream.close()
