"""`zsclip dupes`: groups of exact and near duplicates under the PATHs, one record per file with the one kept and
why; a page of the groups side by side; all but the kept file moved into a folder, with a manifest."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated

import typer

from zsclip.classify.sort import Sorter
from zsclip.cli.common import echo, print_table, results
from zsclip.cli.options import INPUT, OUTPUT, Limits, Quiet, Walk, grouped, option
from zsclip.core import atomic, progress
from zsclip.core.errors import UsageError, ZsclipError
from zsclip.core.paths import check_output_dir, check_output_file
from zsclip.core.wording import all_skipped, plural
from zsclip.photos.dupes import DEFAULT_NEAR, DupeRecord, candidates, find_dupes
from zsclip.photos.facts import require_hashing
from zsclip.photos.page import write_page
from zsclip.pipeline.sources import check_sources
from zsclip.store.cache import Cache

FORMATS = ("table", "csv", "json", "jsonl")
COLUMNS = ["group", "tier", "path", "size", "pixels", "width", "height", "keep", "why"]


@grouped
def dupes_cmd(
    paths: Annotated[
        list[str], typer.Argument(help="Image files, folders, or @list.txt files of paths.", show_default=False)
    ],
    near_threshold: Annotated[
        int,
        option(
            panel=INPUT,
            help="Near duplicates: at most this many of 64 perceptual-hash bits differ (0 = identical pictures).",
        ),
    ] = DEFAULT_NEAR,
    exact_only: Annotated[bool, option("--exact-only", panel=INPUT, help="Only files with the same bytes.")] = False,
    fmt: Annotated[
        str | None,
        option("--format", "-f", panel=OUTPUT, help="table, csv, json or jsonl (default: table on a terminal)."),
    ] = None,
    output: Annotated[Path | None, option("--output", "-o", panel=OUTPUT, help="Write the records to FILE.")] = None,
    report: Annotated[
        Path | None, option(panel=OUTPUT, help="Write DIR/dupes.html: each group side by side, the kept file first.")
    ] = None,
    move_into: Annotated[
        Path | None,
        option(
            panel=OUTPUT,
            help="Move every file but the kept ones into a folder per group under DIR (DIR/manifest.csv says where "
            "each came from; nothing is deleted).",
        ),
    ] = None,
    resume: Annotated[bool, option("--resume", panel=OUTPUT, help="Continue a --move-into that was stopped.")] = False,
    dry_run: Annotated[
        bool, option("--dry-run", panel=OUTPUT, help="With --move-into: print the moves, touch nothing.")
    ] = False,
    *,
    walk: Walk,
    limits: Limits,
    quiet: Quiet,
) -> None:
    """Find duplicate photos: exact copies (the same bytes) and near duplicates (resized, recompressed, re-exported,
    lightly edited or cropped), one record per file in a group with the one kept and why.

    Nothing is deleted: --move-into DIR moves all but the kept file of each group into DIR/<group>/ with a
    manifest (a stopped move continues with --resume), and --report DIR writes a page of the groups."""
    require_hashing()
    fmt = _format(fmt, output)
    if near_threshold < 0 or near_threshold > 64:
        raise UsageError(f"--near-threshold {near_threshold}: give 0 to 64 bits")
    if (dry_run or resume) and move_into is None:
        raise UsageError(f"{'--dry-run' if dry_run else '--resume'} needs --move-into DIR")
    if output is not None:
        output = check_output_file(output, "--output")
    if report is not None:
        check_output_dir(report, "--report")
    sources = check_sources(paths, walk.recursive)
    sorter = _sorter(move_into, resume, dry_run, near_threshold, exact_only, sources)
    groups, skipped = _find(sources, walk.recursive, sorter, near_threshold, exact_only, limits, quiet.quiet)
    if sorter is None or not dry_run or output is not None:  # a dry run's stdout is its plan
        _write(groups, fmt, output)
    moved = _move(groups, sorter, quiet.quiet) if sorter is not None else {}
    if report is not None:
        page = write_page(groups, report, moved=moved)
        if not quiet.quiet:
            progress.log(f"report written to {page}")
    if not quiet.quiet:
        _summary(groups, skipped)


def _move(groups: list[list[DupeRecord]], sorter: Sorter, quiet: bool) -> dict[str, str]:
    """All but the kept files into their group's folder, each once; returns where each went (not in a dry run)."""
    moved: dict[str, str] = {}
    with sorter:
        for group in groups:
            for record in group:
                if record.keep or record.path in moved:  # a file in an exact and a near group moves once
                    continue
                place = sorter.add(SimpleNamespace(path=record.path, label=_folder(record), prob=1.0, abstained=False))
                moved[record.path] = str(place) if place is not None and not sorter.dry_run else ""
    for line in sorter.summary() if not quiet else []:
        progress.log(line)
    return {path: where for path, where in moved.items() if where}


def _format(fmt: str | None, output: Path | None) -> str:
    if fmt is None and output is not None:
        fmt = output.suffix.lstrip(".").lower() if output.suffix.lstrip(".").lower() in FORMATS[1:] else None
    fmt = fmt or ("table" if results().isatty() and output is None else "jsonl")
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt}: use one of {', '.join(FORMATS)}")
    return fmt


def _sorter(move_into, resume: bool, dry_run: bool, near: int, exact_only: bool, sources) -> Sorter | None:
    if move_into is None:
        return None
    target = os.path.realpath(move_into)
    for path, explicit in sources:
        if not explicit and os.path.realpath(path) == target:
            raise UsageError(f"--move-into {move_into}: that is the folder searched; give another (or a subfolder)")
    settings = {"dupes": "exact" if exact_only else f"near<={near}"}
    try:
        return Sorter(
            move_into, "move", dry_run=dry_run, resume=resume, settings=settings, plan=results(), sources=sources
        )
    except ZsclipError as exc:  # the sorter's checks say --sort-into, the option of classify
        raise type(exc)(str(exc).replace("--sort-into", "--move-into")) from None


def _find(sources, recursive: bool, sorter, near: int, exact_only: bool, limits: Limits, quiet: bool):
    files = candidates(sources, recursive, exclude=sorter.exclude if sorter is not None else ())
    show = progress.enabled(quiet)
    with progress.bar("reading photos", len(files), "img", show) as bar:

        def tick(n: int) -> None:
            if bar:
                bar.update(0, advance=n)

        groups, skipped = find_dupes(
            files, Cache(), near_threshold=None if exact_only else near, max_pixels=limits.max_pixels, on_file=tick
        )
    for path, reason in skipped if not quiet else []:
        progress.log(f"skipped {path}: {reason}")
    if files and len(skipped) == len(files):
        raise ZsclipError(f"no image could be read: {all_skipped(len(skipped))}")
    return groups, skipped


def _folder(record: DupeRecord) -> str:
    """The group's folder under --move-into: named by what survives a resumed move (zsclip.photos.dupes)."""
    return record.key


def _write(groups: list[list[DupeRecord]], fmt: str, output: Path | None) -> None:
    records = [r.to_dict() for group in groups for r in group]
    if fmt == "table":
        rows = [
            [
                str(r["group"]),
                r["tier"],
                r["path"],
                f"{r['width']}x{r['height']}",
                f"{r['size']:,}",
                "keep" if r["keep"] else "",
                r["why"],
            ]
            for r in records
        ]
        columns = ["group", "tier", "path", "pixels", "bytes", "keep", "why"]
        if output is None:
            print_table(None, columns, rows, right=False)
            return
        with atomic.atomic_open(output, "w", encoding="utf-8") as f:
            print_table(None, columns, rows, right=False, file=f)
        return
    text = io.StringIO()
    if fmt == "csv":
        writer = csv.DictWriter(text, COLUMNS)
        writer.writeheader()
        writer.writerows(records)
    elif fmt == "json":
        text.write(json.dumps(records, indent=2, ensure_ascii=False) + "\n")
    else:
        text.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    if output is None:
        echo(text.getvalue().rstrip("\n")) if text.getvalue() else None
        return
    with atomic.atomic_open(output, "w", encoding="utf-8", newline="") as f:
        f.write(text.getvalue())


def _summary(groups: list[list[DupeRecord]], skipped: list) -> None:
    exact = sum(1 for g in groups if g[0].tier == "exact")
    extra = sum(len(g) - 1 for g in groups)
    line = f"{plural(len(groups), 'group')} of duplicates ({exact} exact, {len(groups) - exact} near): "
    line += f"{plural(extra, 'file')} beside the kept ones"
    if skipped:
        line += f"; skipped {plural(len(skipped), 'unreadable file')}"
    progress.log(line)
