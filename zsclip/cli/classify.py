"""`zsclip classify`: labels and probabilities per image."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from .. import progress
from ..defaults import DEFAULT_MODEL, FORMATS
from ..errors import UsageError
from .common import (
    DEFAULT_READ,
    BackendOpt,
    BatchOpt,
    DeviceOpt,
    ExactOpt,
    FileTimeoutOpt,
    MaxPixelsOpt,
    ModelOpt,
    PrecisionOpt,
    QuietOpt,
    StoreOpt,
    TemplatesOpt,
    WorkersOpt,
    build_with_progress,
    check_backend,
    choice,
    env,
    read_options,
    with_backend,
)


def classify_cmd(
    paths: Annotated[
        list[str], typer.Argument(help="Image files, folders, or @list.txt files of paths.", show_default=False)
    ],
    classes: Annotated[
        str | None, typer.Option("--classes", "-c", envvar=env("classes"), help="Comma-separated class names.")
    ] = None,
    classes_file: Annotated[
        Path | None,
        typer.Option(envvar=env("classes_file"), help="Class names, one per line, or a classes.tsv/CSV table."),
    ] = None,
    model: ModelOpt = DEFAULT_MODEL,
    templates: TemplatesOpt = "default",
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            "-f",
            envvar=env("format"),
            help=f"Output format: {', '.join(FORMATS)} "
            "(default: by --output's extension, else table on a terminal, else jsonl).",
            show_default=False,
        ),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", envvar=env("output"), help="Write results to FILE.")
    ] = None,
    top_k: Annotated[
        int | None,
        typer.Option(
            envvar=env("top_k"), help="Classes listed per image (default: 3, or fewer classes).", show_default=False
        ),
    ] = None,
    threshold: Annotated[
        float | None,
        typer.Option(envvar=env("threshold"), help="Label 'unknown' when the top probability is below P."),
    ] = None,
    recursive: Annotated[
        bool, typer.Option("--recursive/--no-recursive", envvar=env("recursive"), help="Walk into subfolders.")
    ] = True,
    batch_size: BatchOpt = None,
    workers: WorkersOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = None,
    backend: BackendOpt = None,
    store: StoreOpt = True,
    exact_preprocess: ExactOpt = False,
    max_pixels: MaxPixelsOpt = DEFAULT_READ["max_pixels"],
    file_timeout: FileTimeoutOpt = DEFAULT_READ["file_timeout"],
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            envvar=env("resume"),
            help="Continue an interrupted run: keep the records in OUTPUT.partial and classify only the rest.",
        ),
    ] = False,
    failures: Annotated[
        Path | None, typer.Option(envvar=env("failures"), help="Write skipped files and reasons to FILE (JSONL).")
    ] = None,
    strict: Annotated[
        bool, typer.Option("--strict", envvar=env("strict"), help="Fail the run (exit 1) on the first bad file.")
    ] = False,
    quiet: QuietOpt = False,
) -> None:
    """Classify images by class names: a label, its probability and the top-k classes per image.

    With --output, results are written as they come to OUTPUT.partial, which becomes OUTPUT when the run ends;
    after a crash or kill, the same command with --resume continues where it stopped."""
    from ..prompts import class_names

    names = class_names(classes, classes_file)
    choice("--format", fmt, FORMATS)
    if resume and output is None:
        raise UsageError("--resume needs --output FILE (the run to continue)")
    if failures is not None and output is not None and failures.resolve() == output.resolve():
        raise UsageError(f"--failures and --output are both {output}: give them different files")
    check_backend(backend)
    read = read_options(batch_size, workers, store, exact_preprocess, max_pixels, file_timeout)
    from ..images import check_sources
    from ..output import OutputFile, format_for_path

    sources = check_sources(paths, recursive)
    fmt = fmt or (format_for_path(str(output)) if output else None) or ("table" if sys.stdout.isatty() else "jsonl")
    if output is not None and OutputFile.preflight(output, fmt, resume):
        progress.log(f"{output} is complete already (no {output}.partial to resume); nothing to do")
        return

    from ..cache import Cache
    from ..classify import check_options
    from ..models import load_model
    from ..sinks import classify_into

    show = progress.enabled(quiet)
    cache = Cache()
    clip = with_backend(load_model(model, device=device, precision=precision, cache=cache), backend, cache, quiet)
    clf = build_with_progress(clip, names, templates, cache, show)
    k = check_options(clf, top_k, threshold)
    if top_k is not None and top_k > k:
        progress.log(f"note: --top-k {top_k} is more than the {k} classes; listing {k}")
    counts = classify_into(
        clip, clf, sources, fmt=fmt, top_k=k, threshold=threshold, output=output, resume=resume,
        failures=failures, strict=strict, quiet=quiet, show=show, recursive=recursive, **read,
    )  # fmt: skip
    if not quiet:
        listed = f" (listed in {failures})" if failures and counts.skipped else ""
        resumed = f" ({counts.resumed} more from the interrupted run)" if counts.resumed else ""
        skipped = f", skipped {counts.skipped} bad files{listed}" if counts.skipped else ""
        where = f"; results in {output}" if output else ""
        progress.log(f"classified {counts.done} images{resumed}{skipped}{where}")
