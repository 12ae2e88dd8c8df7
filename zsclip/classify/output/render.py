"""Renderers for prediction records: table (for people), csv, json (one array) and jsonl (one per line).

Writers stream: every record is written (and flushed) as it arrives, except the table, which needs all rows.

File names that are not valid UTF-8 (Python holds their odd bytes as the surrogates U+DC80..U+DCFF, PEP 383)
are written losslessly: CSV keeps the name's bytes as they are (as `find` prints them, so `cut | xargs` finds
the file), JSON and JSONL, which must be UTF-8, write each such byte as the escape `\\udcXX`: `json.loads` gives
back the str that os.listdir gave, and os.fsencode of it the exact bytes. The table shows them as `\\xNN`.
A resumed run reads both back to the same str, so it recognises those files as done.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:  # classify imports torch; renderers do not need it
    from zsclip.classify.predict import Prediction


def format_for_path(path: str) -> str | None:
    """The format an output file's extension asks for, if any."""
    for fmt, ext in (("csv", ".csv"), ("jsonl", ".jsonl"), ("json", ".json")):
        if path.lower().endswith(ext):
            return fmt
    return None


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def display_path(path: str) -> str:
    """A path for people: bytes that are not UTF-8 as \\xNN, control characters (a newline in a name) as
    escapes, so one path is one line and cannot drive the terminal."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], readable(path))


def readable(text: str) -> str:
    """`text` with the bytes of a file name that are not UTF-8 (surrogate-escaped) shown as \\xNN."""
    return _bytes(text).decode("utf-8", "backslashreplace") if _has_surrogates(text) else text


def _bytes(path: str) -> bytes:
    try:
        return os.fsencode(path)
    except UnicodeEncodeError:  # a surrogate no file name gives (U+D800..U+DC7F): show it, not fail
        return path.encode("utf-8", "backslashreplace")


def _has_surrogates(text: str) -> bool:
    return any("\ud800" <= c <= "\udfff" for c in text)


_SURROGATE = re.compile("[\ud800-\udfff]")


def json_line(record: dict) -> str:
    """One JSON object as UTF-8-safe text: odd file-name bytes (surrogates) as \\udcXX escapes."""
    return escape_surrogates(json.dumps(record, ensure_ascii=False))


def escape_surrogates(json_text: str) -> str:
    """JSON text (from json.dumps) with each lone surrogate, which UTF-8 cannot hold, as its \\uXXXX escape:
    json.loads reads it back to the same str."""
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", json_text)


def _emit(stream: IO[str], text: str) -> None:
    """Write `text`; a surrogate-escaped file name goes out as its original bytes even where the stream's
    encoding is strict (stdout): encoding is all-or-nothing, so nothing was written when it fails."""
    try:
        stream.write(text)
    except UnicodeEncodeError:
        encoding = getattr(stream, "encoding", None) or "utf-8"
        try:
            data = text.encode(encoding, "surrogateescape")
        except UnicodeEncodeError:  # a stdout that cannot show a class name either
            data = text.encode(encoding, "backslashreplace")
        buffer = getattr(stream, "buffer", None)
        if buffer is None:
            stream.write(data.decode(encoding, "backslashreplace"))
            return
        stream.flush()
        buffer.write(data)
        buffer.flush()


def _rounded(pred: Prediction) -> dict:
    record = pred.to_dict()
    record["prob"] = round(record["prob"], 6)
    record["top_k"] = [{"label": t["label"], "prob": round(t["prob"], 6)} for t in record["top_k"]]
    return record


class Writer:
    def __init__(self, stream: IO[str], top_k: int):
        self.stream = stream
        self.top_k = top_k
        self.extra: tuple[str, ...] = ()  # columns besides (EXIF_COLUMNS with classify --exif)

    def write(self, pred: Prediction) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.stream.flush()


class JsonlWriter(Writer):
    def write(self, pred: Prediction) -> None:
        _emit(self.stream, json_line(_rounded(pred)) + "\n")
        self.stream.flush()


class JsonWriter(Writer):
    def __init__(self, stream: IO[str], top_k: int):
        super().__init__(stream, top_k)
        self.count = 0
        stream.write("[")

    def write(self, pred: Prediction) -> None:
        _emit(self.stream, ("," if self.count else "") + "\n  " + json_line(_rounded(pred)))
        self.count += 1
        self.stream.flush()

    def close(self) -> None:
        self.stream.write("\n]\n" if self.count else "]\n")
        super().close()


EXIF_COLUMNS = ("taken", "camera", "gps")  # classify --exif (zsclip.photos.exif)


def csv_header(top_k: int, extra: tuple[str, ...] = ()) -> list[str]:
    ranked = [col for i in range(1, top_k + 1) for col in (f"label_{i}", f"prob_{i}")]
    return ["path", "label", "prob", "abstained", *ranked, *extra]


class CsvWriter(Writer):
    def __init__(self, stream: IO[str], top_k: int, header: bool = True, extra: tuple[str, ...] = ()):
        super().__init__(stream, top_k)
        self.extra = extra
        self._row = io.StringIO()  # one row at a time, so a file name's raw bytes can go out as they are
        self.csv = csv.writer(self._row)
        if header:
            self._write(csv_header(top_k, extra))

    def _write(self, row: list) -> None:
        self._row.seek(0)
        self._row.truncate()
        self.csv.writerow(row)
        _emit(self.stream, self._row.getvalue())

    def write(self, pred: Prediction) -> None:
        record = _rounded(pred)
        ranked = [v for t in record["top_k"] for v in (t["label"], t["prob"])]
        columns = [record.get(name, "") for name in self.extra]
        self._write([record["path"], record["label"], record["prob"], record["abstained"], *ranked, *columns])
        self.stream.flush()


class TableWriter(Writer):
    """A table for people: one line per image whatever the width; paths relative to the folder all of them
    share (named above the table), shortened from the left on a narrow terminal, where the end of a path is
    what tells two images apart."""

    LABEL_MAX = 30
    MIN_PATH = 12
    MIN_TOP_K = 12

    def __init__(self, stream: IO[str], top_k: int):
        super().__init__(stream, top_k)
        self.rows: list[Prediction] = []

    def write(self, pred: Prediction) -> None:
        self.rows.append(pred)

    def close(self) -> None:
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table

        root = common_root([p.path for p in self.rows])
        paths = [display_path(os.path.relpath(p.path, root) if root else p.path) for p in self.rows]
        labels = [p.label for p in self.rows]
        ranked = [", ".join(f"{t['label']} {t['prob']:.2f}" for t in p.top_k) for p in self.rows]
        extra = self.extra
        cells = {
            name: [str(p.extra.get(name) if p.extra.get(name) is not None else "") for p in self.rows] for name in extra
        }
        extra_w = sum(max([len(name), *map(len, cells[name])]) + 3 for name in extra)  # each column and its rule
        console = Console(file=self.stream, highlight=False, soft_wrap=False)
        width = console.width - extra_w if console.is_terminal else None
        widths = self._widths(paths, labels, ranked, width)
        path_w, label_w, topk_w = widths
        under = display_path(root + os.sep) if root else ""
        if not console.is_terminal:  # a pipe or a file: no width to fit, so nothing is cut or wrapped
            width = max(sum(widths) + 5 + 11 + extra_w, len(under) + 6)
            console = Console(file=self.stream, highlight=False, soft_wrap=False, width=width)
        title = escape(f"under {shorten_left(under, console.width - 6)}") if root else None
        table = Table(show_edge=False, header_style="bold", title=title, title_justify="left", title_style="dim")
        table.add_column("path", no_wrap=True, width=path_w)
        table.add_column("label", no_wrap=True, overflow="ellipsis", width=label_w)
        table.add_column("prob", justify="right", no_wrap=True, width=5)
        table.add_column("top-k", no_wrap=True, overflow="ellipsis", width=topk_w)
        for name in extra:
            table.add_column(name, no_wrap=True, min_width=max([len(name), *map(len, cells[name])]))
        for p, path, rank in zip(self.rows, paths, ranked, strict=True):
            label = f"[dim]{escape(p.label)}[/dim]" if p.abstained else escape(p.label)
            more = [escape(_cell(p.extra.get(name))) for name in extra]
            table.add_row(escape(shorten_left(path, path_w)), label, f"{p.prob:.3f}", escape(rank), *more)
        console.print(table)
        super().close()

    def _widths(self, paths: list[str], labels: list[str], ranked: list[str], width: int | None) -> tuple[int, ...]:
        """Column widths (path, label, top-k): natural, or, on a terminal, fitted with the path given what
        the label, prob and a readable top-k leave."""
        path_w = max([len("path"), *map(len, paths)])
        label_w = min(self.LABEL_MAX, max([len("label"), *map(len, labels)]))
        topk_w = max([len("top-k"), *map(len, ranked)])
        if width is None:
            return path_w, max([len("label"), *map(len, labels)]), topk_w
        room = width - 11 - label_w - 5  # 11: the padding and rules of four columns
        topk_w = min(topk_w, max(self.MIN_TOP_K, room - path_w))
        path_w = max(self.MIN_PATH, min(path_w, room - topk_w))
        return path_w, label_w, topk_w


def _cell(value) -> str:
    return "" if value is None else str(value)


def common_root(paths: list[str]) -> str:
    """The folder all `paths` are in ('' when none is shared, or they mix absolute and relative paths)."""
    folders = {os.path.dirname(p) for p in paths}
    try:
        root = os.path.commonpath(list(folders)) if folders else ""
    except ValueError:
        return ""
    return "" if root in ("", ".", os.sep) else root


def shorten_left(text: str, width: int) -> str:
    """`text` cut to `width` characters from the left, marked with an ellipsis: the end is what differs."""
    return text if len(text) <= width else "…" + text[len(text) - width + 1 :]


_WRITERS = {"table": TableWriter, "csv": CsvWriter, "json": JsonWriter, "jsonl": JsonlWriter}


def make_writer(fmt: str, stream: IO[str], top_k: int, header: bool = True, extra: tuple[str, ...] = ()) -> Writer:
    if fmt == "csv":
        return CsvWriter(stream, top_k, header, extra)
    writer = _WRITERS[fmt](stream, top_k)
    writer.extra = extra
    return writer
