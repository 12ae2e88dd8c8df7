"""Every text file a user gives zsclip (class lists, template sets, @lists, csv: data sets, classes.tsv, captions)
is read here, one way: UTF-8 with or without a byte-order mark; anything else is a one-line error naming the file
and the line, never a guess. (Latin-1 and cp1252 decode any byte, so guessing would turn 'é' into 'Ã©' silently.)

@lists hold file names, which on Linux are bytes: there, bytes that are not UTF-8 are kept as the name's own bytes
(`errors="surrogateescape"`, as `os.fsdecode` does), so such a file is still found.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterator

from zsclip.core.errors import UsageError

_CONVERT = "save it as UTF-8 (e.g. iconv -f latin1 -t utf-8 FILE > FILE.utf8)"


def read_text(path: str | os.PathLike, what: str = "", *, errors: str = "strict") -> str:
    """The text of a user's file. `what` names it in errors (e.g. '--classes-file ', 'csv:')."""
    name = f"{what}{os.fspath(path)}"
    try:
        with open(path, "rb") as f:
            data = f.read()
    except IsADirectoryError as exc:
        raise UsageError(f"{name}: is a folder, not a file") from exc
    except OSError as exc:
        raise UsageError(f"{name}: cannot read ({exc.strerror or exc})") from exc
    try:
        return data.decode("utf-8-sig", errors=errors)
    except UnicodeDecodeError as exc:
        start = exc.start + (3 if data.startswith(b"\xef\xbb\xbf") else 0)
        line = data.count(b"\n", 0, start) + 1
        column = start - (data.rfind(b"\n", 0, start) + 1) + 1
        raise UsageError(
            f"{name}, line {line}: not UTF-8 text (byte 0x{data[start]:02x} at column {column}); {_CONVERT}"
        ) from exc


def csv_rows(text: str, source: str, delimiter: str = ",") -> Iterator[tuple[int, list[str]]]:
    """(line number where the record starts, cells) per record of a CSV/TSV text; blank lines are left out.
    A malformed record (a stray quote, a field past the csv module's size limit) is a UsageError naming the line."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    end = 0
    while True:
        start = end + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise UsageError(f"{source}, line {reader.line_num}: not a valid {_kind(delimiter)} line ({exc})") from exc
        end = reader.line_num
        if any(cell.strip() for cell in row):
            yield start, row


def _kind(delimiter: str) -> str:
    return "TSV" if delimiter == "\t" else "CSV"
