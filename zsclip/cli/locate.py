"""`zsclip locate`: find the segment of a video that matches a text."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from zsclip.cli.common import results
from zsclip.cli.options import (
    INPUT,
    MODEL,
    OUTPUT,
    SPEED,
    Backend,
    Device,
    ModelOpt,
    Options,
    Quiet,
    Store,
    grouped,
    option,
)
from zsclip.core import progress
from zsclip.core.defaults import DEFAULT_MODEL
from zsclip.core.errors import UsageError, ZsclipError
from zsclip.core.paths import check_output_dir, check_output_file
from zsclip.core.wording import plural
from zsclip.store.cache import Cache
from zsclip.video import check_available
from zsclip.video.locate import FORMATS, check_min_score, check_options, found_rule, locate, read_text_file
from zsclip.video.report import render, write_plot, write_report


@dataclass
class Segments(Options):
    """How segments are found."""

    fps: Annotated[float, option(panel=INPUT, help="Frames sampled per second of video.")] = 2.0
    min_seconds: Annotated[float | None, option(panel=OUTPUT, help="Shortest segment.")] = None
    max_seconds: Annotated[float | None, option(panel=OUTPUT, help="Longest segment.")] = None
    top: Annotated[int, option(panel=OUTPUT, help="Non-overlapping segments per text, best first.")] = 1
    min_score: Annotated[
        float | None,
        option(
            panel=OUTPUT,
            show_default=False,
            help="A segment is found only if its mean cosine similarity reaches this too (besides standing out of "
            "the reference concepts; see the found column).",
        ),
    ] = None
    ordered: Annotated[bool, option("--ordered", panel=OUTPUT, help="Texts are a narration: in-order segments.")] = (
        False
    )


@dataclass
class Written(Options):
    fmt: Annotated[
        str | None,
        option(
            "--format", "-f", panel=OUTPUT, help="table, json, jsonl or csv (default: table on a terminal, else jsonl)."
        ),
    ] = None
    plot: Annotated[Path | None, option(panel=OUTPUT, help="Curves and segments as a PNG.")] = None
    report: Annotated[Path | None, option(panel=OUTPUT, help="JSON, plot and report.html.")] = None


@grouped
def locate_cmd(
    videos: Annotated[list[str], typer.Argument(help="Video files.", show_default=False)],
    text: Annotated[list[str] | None, option("--text", panel=INPUT, help="Text to find (repeatable).")] = None,
    text_file: Annotated[Path | None, option(panel=INPUT, help="Texts, one per line.")] = None,
    spec: ModelOpt = DEFAULT_MODEL,
    templates: Annotated[
        str | None, option("--templates", "-t", panel=MODEL, help="Ensemble each text over a set.")
    ] = None,
    batch_size: Annotated[
        int | None, option(panel=SPEED, help="Frames per forward pass (default: 256 on CUDA, else 32).")
    ] = None,
    *,
    find: Segments,
    out: Written,
    device: Device,
    backend: Backend,
    store: Store,
    quiet: Quiet,
) -> None:
    """Find where each text happens in each video, without training: frame-text similarity curves -> segments."""

    texts = [*(text or []), *(read_text_file(text_file) if text_file else [])]
    texts = check_options(texts, find.fps, find.min_seconds, find.max_seconds, find.top, find.ordered)
    check_min_score(find.min_score)
    if out.fmt is not None and out.fmt not in FORMATS:
        raise UsageError(f"--format {out.fmt}: use one of {', '.join(FORMATS)}")
    for video in videos:
        if not Path(video).is_file():
            raise UsageError(f"{video}: no such file")
    if out.plot is not None:
        check_output_file(out.plot, "--plot")
    if out.report is not None:
        check_output_dir(out.report, "--report")
    backend.check()
    found = _locate(videos, texts, spec, templates, batch_size, find, (device, backend), store.store, quiet.quiet)
    _write(found, out, find.min_score, quiet.quiet)


def _locate(videos, texts, spec, templates, batch_size, find: Segments, runtime, store: bool, quiet: bool):
    """One LocateResult per video that can be read (a single video that cannot is the run's error)."""

    check_available()
    cache = Cache()
    device, backend = runtime
    clip = backend.load(spec, device, cache, quiet)
    found = []
    for video in videos:
        with progress.bar(f"sampling {Path(video).name}", None, "frame", progress.enabled(quiet)) as bar:
            tick = (lambda done, total: bar.update(0, completed=done, total=total)) if bar else None
            try:
                result = locate(
                    clip,
                    video,
                    texts,
                    find.fps,
                    min_seconds=find.min_seconds,
                    max_seconds=find.max_seconds,
                    top=find.top,
                    ordered=find.ordered,
                    templates=templates,
                    min_score=find.min_score,
                    batch_size=batch_size,
                    store=store,
                    cache=cache,
                    progress=tick,
                )
            except ZsclipError as exc:
                if len(videos) == 1:
                    raise
                progress.log(f"skipped {video}: {exc}")
                continue
        for line in result.warnings:
            progress.log(line)
        found.append(result)
    if not found:
        raise ZsclipError(f"no video could be read: all {len(videos)} were skipped")
    return found


def _write(found, out: Written, min_score: float | None, quiet: bool) -> None:

    missing = [(r.video, s.text) for r in found for s in r.segments if not s.found]
    if missing and not quiet:
        total, verb = sum(len(r.segments) for r in found), "is" if len(missing) == 1 else "are"
        progress.log(
            f"note: {len(missing)} of {plural(total, 'segment')} {verb} not found ({found_rule(min_score)}): "
            "the best run of a text that is not there"
        )
    render(found, out.fmt or ("table" if results().isatty() else "jsonl"), results())
    written = [*(write_plot(found, out.plot) if out.plot else [])]
    written += [write_report(found, out.report)] if out.report else []
    if not quiet and written:
        progress.log(f"wrote {', '.join(map(str, written))}")
