"""The crash-safe output file behind `--output FILE [--resume]`, the `--failures` log, and the record of what a
finished FILE was made from (so a later --resume can tell it is this run's own)."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import itertools
import json
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from zsclip.classify.output.render import EXIF_COLUMNS, csv_header, json_line
from zsclip.core import atomic
from zsclip.core.errors import UsageError
from zsclip.core.locks import Lock, probe
from zsclip.core.paths import check_output_file, resolved, writing
from zsclip.store.cache import cache_dir
from zsclip.store.identity import StateError, read_state, stat_of, write_state

if TYPE_CHECKING:
    from zsclip.classify.predict import Skipped


RECORD_KIND = "output file"


def _record_path(path: Path) -> Path:
    """Where the run that finished `path` is recorded: the cache, keyed by the file's resolved path (the file
    itself is the user's; nothing is put beside it once it is finished)."""

    return (
        cache_dir()
        / "outputs"
        / (hashlib.sha256(resolved(str(path)).encode("utf-8", "surrogateescape")).hexdigest()[:32] + ".json")
    )


def record_finished(path: Path, run: dict) -> None:
    """Remember what a finished --output FILE was made from (`run`: the run's options and inputs) and its identity
    as finished, so a later --resume can tell whether FILE is the finished output of the same run."""

    st = stat_of(path)
    with contextlib.suppress(OSError):  # a cache that cannot be written costs the record, not the output
        write_state(_record_path(path), RECORD_KIND, run, {"file": list(st.key()) if st else None})


def check_finished(path: Path, run: dict | None) -> None:
    """--resume of a FILE that is complete: fine (nothing to do) only when FILE is the finished output of this
    same run and unchanged since; else a UsageError saying why (its records would be presented as this run's)."""

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
        header = csv_header(top_k, EXIF_COLUMNS if self.settings.get("exif") else ())
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
