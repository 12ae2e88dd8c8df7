"""Renderers for prediction records: table (for people), csv, json (one array) and jsonl (one per line), the
crash-safe output file behind `--output FILE [--resume]`, and the checks of output locations that run before any
work (no model is loaded for a run that could not write its results).

Writers stream: every record is written (and flushed) as it arrives, except the table, which needs all rows.

File names that are not valid UTF-8 (Python holds their odd bytes as the surrogates U+DC80..U+DCFF, PEP 383)
are written losslessly: CSV keeps the name's bytes as they are (as `find` prints them, so `cut | xargs` finds
the file), JSON and JSONL, which must be UTF-8, write each such byte as the escape `\\udcXX`: `json.loads` gives
back the str that os.listdir gave, and os.fsencode of it the exact bytes. The table shows them as `\\xNN`.
A resumed run reads both back to the same str, so it recognises those files as done.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import hashlib
import io
import itertools
import json
import os
import re
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from . import atomic
from .errors import UsageError, ZsclipError, is_disk_full
from .identity import read_state, write_state
from .locks import Lock

if TYPE_CHECKING:  # classify imports torch; the checks here run before it is needed
    from .classify import Prediction, Skipped

from .defaults import FORMATS

STDOUT = "-"  # `-o -`: the results go to stdout, as with no --output


def format_for_path(path: str) -> str | None:
    """The format an output file's extension asks for, if any."""
    for fmt, ext in (("csv", ".csv"), ("jsonl", ".jsonl"), ("json", ".json")):
        if path.lower().endswith(ext):
            return fmt
    return None


# -- output locations, checked before any work ------------------------------------------------------------
def check_output_file(path: str | os.PathLike | None, what: str = "--output") -> Path | None:
    """Check that results can be written to the file `path` (missing parent folders are created when it is
    written); None for no path or `-` (stdout). Raises UsageError, naming `what` (the option), for a folder,
    a device or pipe, a parent that is a file, or a place that cannot be written (permissions, read-only
    file system)."""
    if path is None or str(path) == STDOUT:
        return None
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{what} {path}: is a folder; give a file name, e.g. {path / 'results.csv'}")
    if path.exists() and not path.is_file():
        raise UsageError(f"{what} {path}: not a regular file; give a file name (or - for stdout)")
    _check_writable(path.parent, what, path)
    return path


def check_output_dir(path: str | os.PathLike, what: str) -> Path:
    """Check that `path` is a folder that files can be written into, or can be created (it is, with its
    parents, when written); raises UsageError naming `what` (the option) otherwise."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{what} {path}: is a file, not a folder; give a folder (it is created if missing)")
    _check_writable(path, what, path)
    return path


def _check_writable(directory: Path, what: str, path: Path) -> None:
    """`directory` or, if missing, its nearest existing ancestor (where it would be created) takes a new file."""
    existing = directory
    while not existing.exists():
        if existing.is_symlink():
            raise UsageError(f"{what} {path}: {existing} is a broken symbolic link")
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"{what} {path}: {existing} is a file, not a folder")
    try:  # a real write: access() says yes to root on a read-only mount's files and knows no ACLs or quotas
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".zsclip-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UsageError(f"{what} {path}: cannot write in {existing} ({_reason(exc)})") from exc


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


@contextlib.contextmanager
def writing(path: str | os.PathLike, what: str) -> Iterator[None]:
    """Turn a failed write of a result file into a one-line ZsclipError naming it (a disk that fills up or a
    location that changed after the check), instead of a traceback."""
    try:
        yield
    except OSError as exc:
        if is_disk_full(exc):
            raise ZsclipError(f"{what} {path}: the disk is full ({_reason(exc)}); free space and run again") from exc
        where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(path) else ""
        raise ZsclipError(f"{what} {path}: cannot write{where}: {_reason(exc)}") from exc


@dataclass
class OutputPlan:
    """Where classify's results go, decided from the options before the model loads."""

    output: Path | None  # None: stdout
    fmt: str
    failures: Path | None = None
    resume: bool = False
    complete: bool = False  # --resume of a FILE that is finished already: nothing to do


def plan_output(
    output: str | os.PathLike | None,
    fmt: str | None = None,
    *,
    failures: str | os.PathLike | None = None,
    resume: bool = False,
    terminal: bool = False,
    run=None,
) -> OutputPlan:
    """All usage errors of classify's --output, --format, --failures and --resume, before any work. `run`: what
    the run is made of (a dict, or a function giving one), checked against a finished FILE on --resume.

    `output` `-` is stdout. The format defaults to the output file's extension, else table on a `terminal`,
    else jsonl; an explicit --format that contradicts the extension (`-f jsonl -o x.csv`) is refused rather
    than writing JSONL into a .csv. Missing parent folders of the files are created when they are written."""
    if fmt is not None and fmt not in FORMATS:
        raise UsageError(f"--format {fmt}: use one of {', '.join(FORMATS)}")
    path = check_output_file(output, "--output")
    failures_path = check_output_file(failures, "--failures")
    if failures is not None and failures_path is None:
        raise UsageError("--failures -: give a file (skipped files are listed on stderr already)")
    if resume and path is None:
        raise UsageError("--resume needs --output FILE (the run to continue)")
    if failures_path is not None and path is not None and _same_file(failures_path, path):
        raise UsageError(f"--failures and --output are both {path}: give them different files")
    implied = format_for_path(str(path)) if path is not None else None
    if fmt is not None and implied is not None and fmt != implied:
        raise UsageError(
            f"--format {fmt} but --output {path} is named as {implied}: "
            f"drop --format, or name the file {path.with_suffix('.' + ('txt' if fmt == 'table' else fmt)).name}"
        )
    fmt = fmt or implied or ("table" if terminal and path is None else "jsonl")
    complete = path is not None and OutputFile.preflight(path, fmt, resume)
    if complete and run is not None:
        check_finished(path, {**(run() if callable(run) else run), "format": fmt})
    return OutputPlan(path, fmt, failures_path, resume, complete)


# -- what a finished output file was made from ------------------------------------------------------------
RECORD_KIND = "output file"


def _record_path(path: Path) -> Path:
    """Where the run that finished `path` is recorded: the cache, keyed by the file's resolved path (the file
    itself is the user's; nothing is put beside it once it is finished)."""
    from .cache import cache_dir

    return cache_dir() / "outputs" / (hashlib.sha256(resolved(str(path)).encode("utf-8", "surrogateescape"))
                                      .hexdigest()[:32] + ".json")  # fmt: skip


def record_finished(path: Path, run: dict) -> None:
    """Remember what a finished --output FILE was made from (`run`: the run's options and inputs) and its identity
    as finished, so a later --resume can tell whether FILE is the finished output of the same run."""
    from .identity import stat_of

    st = stat_of(path)
    with contextlib.suppress(OSError):  # a cache that cannot be written costs the record, not the output
        write_state(_record_path(path), RECORD_KIND, run, {"file": list(st.key()) if st else None})


def check_finished(path: Path, run: dict | None) -> None:
    """--resume of a FILE that is complete: fine (nothing to do) only when FILE is the finished output of this
    same run and unchanged since; else a UsageError saying why (its records would be presented as this run's)."""
    from .identity import StateError, stat_of

    if run is None:
        return
    drop = f"drop --resume to classify again and replace {path}, or write to another file"
    try:
        body = read_state(_record_path(path), RECORD_KIND, run)
    except StateError as exc:
        if exc.stale:
            raise UsageError(f"--resume: {path} is the finished output of another run ({exc}); {drop}") from None
        raise UsageError(f"--resume: {path} is complete, and no record says how it was made; {drop}") from None
    st = stat_of(path)
    if st is None or body.get("file") != list(st.key()):
        raise UsageError(f"--resume: {path} changed since the run that wrote it finished; {drop}")


def _same_file(a: Path, b: Path) -> bool:
    return resolved(str(a)) == resolved(str(b))


# -- paths: how they are compared and shown --------------------------------------------------------------
def resolved(path: str, cwd: str | None = None) -> str:
    """`path` as an absolute path with its folders' symbolic links resolved, so `./imgs/a.jpg`, `imgs/a.jpg`,
    the same from another working directory, and the same through a linked folder are one file. The file name
    itself is kept (a link to an image is its own entry). Folders are resolved once each (cached)."""
    head, tail = os.path.split(os.path.normpath(os.path.join(cwd or os.getcwd(), path)))
    return os.path.join(_real_dir(head), tail)


@functools.lru_cache(maxsize=4096)
def _real_dir(directory: str) -> str:
    return os.path.realpath(directory)


class DonePaths:
    """The files a resumed run has already, compared by resolved path (a Container, for `exclude`)."""

    def __init__(self, paths: Iterable[str] = (), cwd: str | None = None):
        self._resolved = {resolved(p, cwd) for p in paths}

    def __contains__(self, path: object) -> bool:
        return bool(self._resolved) and isinstance(path, str) and resolved(path) in self._resolved

    def __len__(self) -> int:
        return len(self._resolved)

    def __iter__(self) -> Iterator[str]:
        return iter(self._resolved)


def resolved_inputs(sources: Iterable[str | os.PathLike]) -> list[str]:
    """The PATH arguments of a run (folders, files, @lists) resolved, to tell a resume of the same run from
    another run: `./imgs` and `imgs` are the same input."""
    return [("@" + resolved(s[1:])) if s.startswith("@") else resolved(s) for s in map(os.fsdecode, sources)]


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


# -- writers ---------------------------------------------------------------------------------------------
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


def csv_header(top_k: int) -> list[str]:
    ranked = [col for i in range(1, top_k + 1) for col in (f"label_{i}", f"prob_{i}")]
    return ["path", "label", "prob", "abstained", *ranked]


class CsvWriter(Writer):
    def __init__(self, stream: IO[str], top_k: int, header: bool = True):
        super().__init__(stream, top_k)
        self._row = io.StringIO()  # one row at a time, so a file name's raw bytes can go out as they are
        self.csv = csv.writer(self._row)
        if header:
            self._write(csv_header(top_k))

    def _write(self, row: list) -> None:
        self._row.seek(0)
        self._row.truncate()
        self.csv.writerow(row)
        _emit(self.stream, self._row.getvalue())

    def write(self, pred: Prediction) -> None:
        record = _rounded(pred)
        ranked = [v for t in record["top_k"] for v in (t["label"], t["prob"])]
        self._write([record["path"], record["label"], record["prob"], record["abstained"], *ranked])
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
        console = Console(file=self.stream, highlight=False, soft_wrap=False)
        widths = self._widths(paths, labels, ranked, console.width if console.is_terminal else None)
        path_w, label_w, topk_w = widths
        under = display_path(root + os.sep) if root else ""
        if not console.is_terminal:  # a pipe or a file: no width to fit, so nothing is cut or wrapped
            width = max(sum(widths) + 5 + 11, len(under) + 6)
            console = Console(file=self.stream, highlight=False, soft_wrap=False, width=width)
        title = escape(f"under {shorten_left(under, console.width - 6)}") if root else None
        table = Table(show_edge=False, header_style="bold", title=title, title_justify="left", title_style="dim")
        table.add_column("path", no_wrap=True, width=path_w)
        table.add_column("label", no_wrap=True, overflow="ellipsis", width=label_w)
        table.add_column("prob", justify="right", no_wrap=True, width=5)
        table.add_column("top-k", no_wrap=True, overflow="ellipsis", width=topk_w)
        for p, path, rank in zip(self.rows, paths, ranked, strict=True):
            label = f"[dim]{escape(p.label)}[/dim]" if p.abstained else escape(p.label)
            table.add_row(escape(shorten_left(path, path_w)), label, f"{p.prob:.3f}", escape(rank))
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


def make_writer(fmt: str, stream: IO[str], top_k: int, header: bool = True) -> Writer:
    if fmt == "csv":
        return CsvWriter(stream, top_k, header)
    return _WRITERS[fmt](stream, top_k)


class FailuresLog:
    """`--failures FILE`: skipped files and reasons as JSON lines, written atomically, and kept (with what it
    has) when the run fails, since those are the files that made it fail."""

    def __init__(self, path: str | os.PathLike):
        checked = check_output_file(path, "--failures")
        if checked is None:
            raise UsageError("--failures -: give a file (skipped files are listed on stderr already)")
        self.path = checked
        self._cm = atomic.atomic_open(self.path, "w", encoding="utf-8", keep_on_error=True)
        with writing(self.path, "--failures"):
            self.stream = self._cm.__enter__()

    def write(self, record: Skipped) -> None:
        self.stream.write(json_line(record.to_dict()) + "\n")
        self.stream.flush()

    def __enter__(self) -> FailuresLog:
        return self

    def __exit__(self, *exc) -> bool | None:
        if exc[0] is not None:  # the run's own error goes on as it is; what was listed is kept
            return self._cm.__exit__(*exc)
        with writing(self.path, "--failures"):
            return self._cm.__exit__(*exc)


RESUMABLE = ("csv", "jsonl")


def lock_path(path: Path) -> Path:
    """The lock file beside an --output FILE (hidden): two runs writing one FILE would mix their records."""
    return path.with_name(f".{path.name}.zsclip-lock")


class OutputFile:
    """`--output FILE`: records go to FILE.partial as they come (flushed at once, fsynced every few seconds), and
    FILE appears, complete, only when the run ends. A killed run leaves FILE.partial behind; `resume` continues
    it: its complete records are kept, a torn last line is cut, and their files are left out of the new run
    (compared by resolved path, so `./imgs` and `imgs`, or another working directory, find them).
    The run's settings and inputs sit beside it (FILE.partial.json), so a resume with other classes,
    templates, model or inputs is refused instead of mixing two runs in one file. Missing parent folders are
    created."""

    SYNC_EVERY = 5.0  # seconds between fsyncs: what a power cut may cost; kill -9 costs nothing

    def __init__(
        self,
        path: Path,
        fmt: str,
        settings: dict,
        resume: bool = False,
        inputs: Iterable[str | os.PathLike] | None = None,
        run: dict | None = None,
    ):
        self.path = check_output_file(path, "--output")
        if self.path is None:
            raise UsageError("--output -: stdout is not a file; give no --output to write to stdout")
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.meta = self.path.with_name(self.path.name + ".partial.json")
        self.lock = Lock(lock_path(self.path), f"--output {self.path}")  # one run at a time writes FILE
        self.run = run
        self.fmt = fmt
        self.settings = json.loads(json.dumps(settings))  # as it reads back: tuples become lists
        self.inputs = resolved_inputs(inputs) if inputs is not None else None
        self.done = DonePaths()
        self.preflight(self.path, fmt, resume)
        self.lock.acquire()
        try:
            continuing = self._open(resume, settings)
        except BaseException:
            self.lock.release()
            raise
        self.appending = continuing and self.partial.stat().st_size > 0  # csv: the header is there already
        self._synced = time.monotonic()

    def _open(self, resume: bool, settings: dict) -> bool:
        """Continue FILE.partial (True) or start it (False), and open it for the run."""
        continuing = resume and self.partial.exists()
        with writing(self.path, "--output"):
            if continuing:
                cwd = self._check_settings()
                self.done = DonePaths(self._read_done(settings.get("top_k", 1)), cwd)
            else:
                meta = {**self.settings, "inputs": self.inputs, "cwd": os.getcwd()}
                atomic.write_text(self.meta, json_line(meta) + "\n")
            # Open for the whole run; finish() or abandon() closes it. Raw bytes of odd file names go in as
            # they are (see the module docstring).
            self.stream = open(  # noqa: SIM115
                self.partial, "a" if continuing else "w", encoding="utf-8", errors="surrogateescape", newline=""
            )
        return continuing

    @staticmethod
    def preflight(path: Path, fmt: str, resume: bool) -> bool:
        """The checks that need no model, so a mistake costs no loading: True when a resumed FILE is complete
        already and there is nothing to do."""
        partial = Path(f"{path}.partial")
        from .locks import probe

        probe(lock_path(Path(path)), f"--output {path}")
        if resume and fmt not in RESUMABLE:
            raise UsageError(f"--resume: {fmt} output cannot be continued; use --format csv or jsonl")
        if not resume and partial.exists():
            if fmt not in RESUMABLE:
                raise UsageError(
                    f"{partial} holds the finished records of an earlier run that stopped ({fmt} output cannot be "
                    "continued): move or delete it to start over"
                )
            raise UsageError(
                f"{partial} holds an unfinished run: add --resume to continue it, or delete it to start over"
            )
        return resume and Path(path).exists() and not partial.exists()

    def _check_settings(self) -> str | None:
        """Refuse to continue another run; returns the working directory the run's paths are relative to."""
        try:
            before = json.loads(self.meta.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            before = None
        if not isinstance(before, dict):
            raise UsageError(f"{self.meta} is missing or damaged: cannot tell how {self.partial} was made; delete both")
        changed = [k for k in self.settings if before.get(k) != self.settings[k]]
        if self.inputs is not None and before.get("inputs") is not None and before["inputs"] != self.inputs:
            changed.append("inputs")
        if changed:
            raise UsageError(
                f"--resume: {self.partial} was made with other {', '.join(changed)}; "
                "use the same options, or delete it to start over"
            )
        cwd = before.get("cwd")
        return cwd if isinstance(cwd, str) else None

    def _read_done(self, top_k: int) -> set[str]:
        """Paths of the complete records in FILE.partial; cuts it after the last complete one."""
        data = self.partial.read_bytes()
        keep = data.rfind(b"\n") + 1  # a line without its newline was torn by the kill
        text = data[:keep].decode("utf-8", errors="surrogateescape")  # as written: odd name bytes come back
        done: set[str] = set()
        if self.fmt == "jsonl":
            offset = 0
            for line in text.splitlines(keepends=True):
                try:
                    done.add(json.loads(line)["path"])
                except (ValueError, KeyError, TypeError):
                    break
                offset += len(line.encode("utf-8", errors="surrogateescape"))
            keep = offset
        else:
            done, keep = self._csv_rows(text, top_k)
        if keep < len(data):
            with open(self.partial, "r+b") as f:
                f.truncate(keep)
        return done

    def _csv_rows(self, text: str, top_k: int) -> tuple[set[str], int]:
        """Paths of the complete CSV records, and the byte offset after the last one. A row is complete when
        it has every column: a kill can tear a quoted path that holds a line break after that break."""
        header = csv_header(top_k)
        consumed = [0]

        def lines():
            for line in text.splitlines(keepends=True):
                consumed[0] += len(line.encode("utf-8", errors="surrogateescape"))
                yield line

        done: set[str] = set()
        keep = 0
        rows = csv.reader(lines(), strict=True)
        for i in itertools.count():
            try:
                row = next(rows)
            except (StopIteration, csv.Error):  # csv.Error: a quoted field torn open at the end
                break
            if i == 0 and row != header:
                raise UsageError(f"--resume: {self.partial} has other columns; use the same --top-k or delete it")
            if i and len(row) != len(header):
                break
            if i:
                done.add(row[0])
            keep = consumed[0]
        return done, keep

    def tick(self) -> None:
        """After each record: durable every few seconds, so a power cut costs seconds, not the run."""
        if time.monotonic() - self._synced > self.SYNC_EVERY:
            self.stream.flush()
            os.fsync(self.stream.fileno())
            self._synced = time.monotonic()

    def finish(self) -> None:
        """The run is complete: FILE.partial becomes FILE (with the mode of a FILE it replaces)."""
        self.stream.flush()
        os.fsync(self.stream.fileno())
        self.stream.close()
        if self.path.exists():
            with contextlib.suppress(OSError):
                os.chmod(self.partial, atomic.file_mode(self.path))
        os.replace(self.partial, self.path)
        self.meta.unlink(missing_ok=True)
        atomic.fsync_dir(self.path.parent)
        if self.run is not None:
            record_finished(self.path, {**self.run, "format": self.fmt})
        self.lock.release()

    def discard(self) -> None:
        """Nothing was recorded: leave no FILE.partial to trip the next run. Safe after abandon()."""
        self.abandon()
        with contextlib.suppress(OSError):
            self.partial.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.meta.unlink(missing_ok=True)

    def abandon(self) -> None:
        """The run stopped early: keep FILE.partial (flushed) for --resume. Safe to call again (discard does):
        a second call must not raise over the error or Ctrl-C that stopped the run."""
        self.lock.release()
        if self.stream.closed:
            return
        # On a full disk the flush fails again; what reached the file is kept (a torn last line is cut on resume).
        with contextlib.suppress(OSError, ValueError):
            self.stream.flush()
        with contextlib.suppress(OSError, ValueError):
            self.stream.close()
