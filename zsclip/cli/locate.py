"""`zsclip locate`: find the segment of a video that matches a text."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .. import progress
from ..defaults import DEFAULT_MODEL
from ..errors import UsageError, ZsclipError, plural
from .common import BatchOpt, DeviceOpt, ModelOpt, PrecisionOpt, StoreOpt, env
from .common import results as results_stream


def locate_cmd(
    videos: Annotated[list[str], typer.Argument(help="Video files.", show_default=False)],
    text: Annotated[list[str] | None, typer.Option("--text", help="Text to find (repeatable).")] = None,
    text_file: Annotated[Path | None, typer.Option(envvar=env("text_file"), help="Texts, one per line.")] = None,
    model: ModelOpt = DEFAULT_MODEL,
    templates: Annotated[
        str | None, typer.Option("--templates", "-t", envvar=env("templates"), help="Ensemble each text over a set.")
    ] = None,
    fps: Annotated[float, typer.Option(envvar=env("fps"), help="Frames sampled per second of video.")] = 2.0,
    min_seconds: Annotated[float | None, typer.Option(envvar=env("min_seconds"), help="Shortest segment.")] = None,
    max_seconds: Annotated[float | None, typer.Option(envvar=env("max_seconds"), help="Longest segment.")] = None,
    top: Annotated[int, typer.Option(envvar=env("top"), help="Non-overlapping segments per text, best first.")] = 1,
    min_score: Annotated[
        float | None,
        typer.Option(
            envvar=env("min_score"),
            help="A segment is found only if its mean cosine similarity reaches this too (besides standing out of "
            "the reference concepts; see the found column).",
            show_default=False,
        ),
    ] = None,
    ordered: Annotated[
        bool, typer.Option("--ordered", envvar=env("ordered"), help="Texts are a narration: in-order segments.")
    ] = False,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            "-f",
            envvar=env("format"),
            help="table, json, jsonl or csv (default: table on a terminal, else jsonl).",
        ),
    ] = None,
    plot: Annotated[Path | None, typer.Option(envvar=env("plot"), help="Curves and segments as a PNG.")] = None,
    report: Annotated[Path | None, typer.Option(envvar=env("report"), help="JSON, plot and report.html.")] = None,
    batch_size: BatchOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = None,
    store: StoreOpt = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", envvar=env("quiet"), help="No progress.")] = False,
) -> None:
    """Find where each text happens in each video, without training: frame-text similarity curves -> segments."""
    from ..locate import FORMATS, check_min_score, check_options, read_text_file

    texts = check_options([*(text or []), *(read_text_file(text_file) if text_file else [])], fps, min_seconds,
                          max_seconds, top, ordered)  # fmt: skip
    check_min_score(min_score)
    if fmt is not None and fmt not in FORMATS:
        raise UsageError(f"--format {fmt}: use one of {', '.join(FORMATS)}")
    for video in videos:
        if not Path(video).is_file():
            raise UsageError(f"{video}: no such file")
    from ..output import check_output_dir, check_output_file

    if plot is not None:
        check_output_file(plot, "--plot")
    if report is not None:
        check_output_dir(report, "--report")
    from ..cache import Cache
    from ..locate import locate
    from ..locate_report import render, write_plot, write_report
    from ..models import load_model
    from ..video import check_available

    check_available()
    cache = Cache()
    clip = load_model(model, device=device, precision=precision, cache=cache)
    results = []
    for video in videos:
        with progress.bar(f"sampling {Path(video).name}", None, "frame", progress.enabled(quiet)) as bar:
            try:
                result = locate(
                    clip, video, texts, fps, min_seconds=min_seconds, max_seconds=max_seconds, top=top,
                    ordered=ordered, templates=templates, min_score=min_score, batch_size=batch_size, store=store,
                    cache=cache,
                    progress=(lambda done, total: bar.update(0, completed=done, total=total)) if bar else None,
                )  # fmt: skip
            except ZsclipError as exc:
                if len(videos) == 1:
                    raise
                progress.log(f"skipped {video}: {exc}")
                continue
        for line in result.warnings:
            progress.log(line)
        results.append(result)
    if not results:
        raise ZsclipError(f"no video could be read: all {len(videos)} were skipped")
    missing = [(r.video, s.text) for r in results for s in r.segments if not s.found]
    if missing and not quiet:
        from ..locate import found_rule

        total, verb = sum(len(r.segments) for r in results), "is" if len(missing) == 1 else "are"
        progress.log(f"note: {len(missing)} of {plural(total, 'segment')} {verb} not found ({found_rule(min_score)}): "
                     "the best run of a text that is not there")  # fmt: skip
    render(results, fmt or ("table" if results_stream().isatty() else "jsonl"), results_stream())
    written = [*(write_plot(results, plot) if plot else []), *([write_report(results, report)] if report else [])]
    if not quiet and written:
        progress.log(f"wrote {', '.join(map(str, written))}")
