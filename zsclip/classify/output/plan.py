"""Where classify's results go, decided from the options before the model loads: the --output file and its
format, --failures, and whether a --resume has anything to do."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from zsclip.classify.output.file import OutputFile, check_finished
from zsclip.classify.output.render import format_for_path
from zsclip.core.defaults import FORMATS
from zsclip.core.errors import UsageError
from zsclip.core.paths import check_output_file, resolved


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


def _same_file(a: Path, b: Path) -> bool:
    return resolved(str(a)) == resolved(str(b))
