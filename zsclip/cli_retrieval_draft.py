"""Draft of the retrieval commands for the CLI package: `zsclip index`, `zsclip search`, and the body of
`zsclip eval --task retrieval`. Plain functions with Typer options, registered nowhere: the lead moves them into
zsclip/cli/ (`app.command("index")(index_cmd)`, `app.command("search")(search_cmd)`, and eval_cmd calls
eval_retrieval when --task is retrieval). Each reads like a few API calls and a renderer.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
from pathlib import Path
from typing import Annotated

import typer

from . import atomic, progress
from .cache import Cache
from .cli import (
    BatchOpt,
    DeviceOpt,
    ExactOpt,
    FileTimeoutOpt,
    MaxPixelsOpt,
    ModelOpt,
    PrecisionOpt,
    QuietOpt,
    WorkersOpt,
    _env,
)
from .errors import UsageError, ZsclipError
from .images import (
    DEFAULT_FILE_TIMEOUT,
    DEFAULT_MAX_PIXELS,
    check_limits,
    count_candidates,
    expand_sources,
    first_image,
)
from .models import DEFAULT_MODEL, load_model
from .output import FORMATS, format_for_path

RecursiveOpt = Annotated[
    bool, typer.Option("--recursive/--no-recursive", envvar=_env("recursive"), help="Walk into subfolders.")
]
FailuresOpt = Annotated[
    Path | None, typer.Option(envvar=_env("failures"), help="Write skipped files and reasons to FILE (JSONL).")
]


def _index_with_progress(clip, sources, show: bool, quiet: bool, failures: Path | None, **options):
    """zsclip.index with a progress bar, skipped files on stderr and in --failures; returns the IndexResult."""
    from .retrieval import index

    with progress.bar("indexing", None, "img", show) as bar:
        if bar:
            recursive = options.get("recursive", True)
            threading.Thread(
                target=lambda: bar.update(0, total=count_candidates(sources, recursive)), daemon=True
            ).start()

        def tick(done: int, skipped: int) -> None:
            if bar:
                bar.update(0, advance=done + skipped)

        result = index(clip, sources, on_batch=tick, **options)
    if not quiet:
        for path, reason in result.skipped:
            progress.log(f"skipped {path}: {reason}")
    if failures:
        with atomic.atomic_open(failures, "w", encoding="utf-8") as f:
            f.writelines(json.dumps({"path": p, "reason": r}, ensure_ascii=False) + "\n" for p, r in result.skipped)
    return result


def index_cmd(
    paths: Annotated[
        list[str], typer.Argument(help="Image files, folders, or @list.txt files of paths.", show_default=False)
    ],
    model: ModelOpt = DEFAULT_MODEL,
    prune: Annotated[
        bool, typer.Option("--prune", envvar=_env("prune"), help="Remove stored rows of files that no longer exist.")
    ] = False,
    failures: FailuresOpt = None,
    recursive: RecursiveOpt = True,
    batch_size: BatchOpt = None,
    workers: WorkersOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = None,
    exact_preprocess: ExactOpt = False,
    max_pixels: MaxPixelsOpt = DEFAULT_MAX_PIXELS,
    file_timeout: FileTimeoutOpt = DEFAULT_FILE_TIMEOUT,
    quiet: QuietOpt = False,
) -> None:
    """Put every image under PATH into the image-embedding store, for `zsclip search` (and classify) to reuse.

    Incremental: only new or changed files are encoded; moved or renamed files are found by content hash. Prints
    the counts as JSON: indexed, new, reused, changed, moved, skipped, missing (stored, file gone), pruned."""
    check_limits(batch_size, workers, max_pixels, file_timeout)
    sources = expand_sources(paths)
    if first_image(sources, recursive) is None:
        raise UsageError(f"no images found under {', '.join(paths)}")
    cache = Cache()
    clip = load_model(model, device=device, precision=precision, cache=cache)
    result = _index_with_progress(
        clip, sources, progress.enabled(quiet), quiet, failures, prune=prune, cache=cache, batch_size=batch_size,
        workers=workers, recursive=recursive, exact=exact_preprocess, max_pixels=max_pixels,
        file_timeout=file_timeout,
    )  # fmt: skip
    typer.echo(json.dumps(result.to_dict()))
    if result.indexed == 0:
        raise ZsclipError(f"no image could be read: all {len(result.skipped)} files were skipped")
    if not quiet:
        c = result.to_dict()
        gone = f"; {c['missing']} stored files are gone" + (" (pruned)" if prune else " (--prune removes them)")
        progress.log(
            f"indexed {c['indexed']} images: {c['new']} new, {c['reused']} reused ({c['moved']} moved), "
            f"{c['changed']} changed, {c['skipped']} skipped" + (gone if c["missing"] else "")
        )


def search_cmd(
    query: Annotated[str | None, typer.Argument(help="What to find, in words.", show_default=False)] = None,
    paths: Annotated[
        list[str] | None,
        typer.Argument(help="Search images under these (default: the current folder).", show_default=False),
    ] = None,
    image: Annotated[
        Path | None, typer.Option(envvar=_env("image"), help="Search by this image; all arguments are then PATHs.")
    ] = None,
    add: Annotated[list[str] | None, typer.Option("--add", help="Add this text to the query (repeatable).")] = None,
    subtract: Annotated[
        list[str] | None, typer.Option("--subtract", help="Subtract this text from the query (repeatable).")
    ] = None,
    top: Annotated[int, typer.Option("--top", "-n", envvar=_env("top"), help="How many results.")] = 10,
    threshold: Annotated[
        float | None, typer.Option(envvar=_env("threshold"), help="Leave out results below this cosine similarity.")
    ] = None,
    templates: Annotated[
        str | None,
        typer.Option("--templates", "-t", envvar=_env("templates"), help="Ensemble the query over a template set."),
    ] = None,
    fmt: Annotated[
        str | None,
        typer.Option("--format", "-f", envvar=_env("format"), help=f"{', '.join(FORMATS)}.", show_default=False),
    ] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write results to FILE.")] = None,
    report: Annotated[Path | None, typer.Option(help="Write search.html with thumbnails here.")] = None,
    approximate: Annotated[
        bool, typer.Option("--approximate", envvar=_env("approximate"), help="faiss IVF index (zsclip[faiss]).")
    ] = False,
    model: ModelOpt = DEFAULT_MODEL,
    recursive: RecursiveOpt = True,
    batch_size: BatchOpt = None,
    workers: WorkersOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = None,
    exact_preprocess: ExactOpt = False,
    max_pixels: MaxPixelsOpt = DEFAULT_MAX_PIXELS,
    file_timeout: FileTimeoutOpt = DEFAULT_FILE_TIMEOUT,
    quiet: QuietOpt = False,
) -> None:
    """Find the images most like a text (or --image), best first with their cosine similarity.

    Images under PATH that are not indexed yet are indexed first. Query arithmetic: "dog" --add beach
    --subtract people."""
    from .retrieval import check_search_options, query_vector, search
    from .retrieval_report import write_hits, write_search_report

    if image is not None and query is not None:  # with --image every positional argument is a PATH
        query, paths = None, [query, *(paths or [])]
    if query is None and image is None:
        raise UsageError("give a QUERY text or --image FILE")
    if fmt is not None and fmt not in FORMATS:
        raise UsageError(f"--format {fmt}: use one of {', '.join(FORMATS)}")
    check_limits(batch_size, workers, max_pixels, file_timeout)
    check_search_options(top, threshold)
    sources = expand_sources(paths or ["."])
    fmt = fmt or (format_for_path(str(output)) if output else None) or ("table" if sys.stdout.isatty() else "jsonl")
    cache = Cache()
    clip = load_model(model, device=device, precision=precision, cache=cache)
    options = dict(cache=cache, exact=exact_preprocess, batch_size=batch_size, workers=workers, recursive=recursive,
                   max_pixels=max_pixels, file_timeout=file_timeout)  # fmt: skip
    # The query first, so a bad --image fails before any indexing.
    q = query_vector(clip, query, image=image, add=add or [], subtract=subtract or [], templates=templates,
                     cache=cache, exact=exact_preprocess)  # fmt: skip
    indexed = _index_with_progress(clip, sources, progress.enabled(quiet), quiet, None, **options)
    if indexed.new + indexed.changed and not quiet:
        progress.log(f"indexed {indexed.new + indexed.changed} new or changed images first")
    hits = search(clip, q, sources, top, threshold=threshold, index_first=False, approximate=approximate, **options)
    with atomic.atomic_open(output, "w", encoding="utf-8", newline="") if output else contextlib.nullcontext() as out:
        write_hits(hits, fmt, out or sys.stdout)
    if report:
        described = {"query": query, "image": str(image) if image else None, "add": add, "subtract": subtract,
                     "paths": ", ".join(paths or ["."]), "model": clip.spec, "templates": templates}  # fmt: skip
        page = write_search_report(hits, report, described)
        if not quiet:
            progress.log(f"report written to {page}")
    if not hits and not quiet:
        progress.log("no results" + (f" at or above --threshold {threshold}" if threshold is not None else ""))


def retrieval_data(dataset: str, recall_k: str):
    """`zsclip eval DATA --task retrieval --recall-k 1,5,10`, checked before any model is loaded:
    (CaptionData, [K...])."""
    from .retrieval_eval import check_recall_k, load_captions

    try:
        ks = check_recall_k([int(k) for k in recall_k.split(",") if k.strip()])
    except ValueError:
        raise UsageError(f"--recall-k {recall_k}: give comma-separated integers such as 1,5,10") from None
    return load_captions(dataset), ks


def eval_retrieval(data, ks: list[int], clip, report: Path | None, fmt: str, quiet: bool, **options) -> None:
    """The rest of `zsclip eval --task retrieval` once eval_cmd has loaded the model: `options` are eval's
    reading options (batch_size, workers, store, exact, max_pixels, file_timeout)."""
    from .retrieval_eval import evaluate_retrieval, summary_dict
    from .retrieval_report import write_retrieval_report

    with progress.bar("encoding images", len(data.images), "img", progress.enabled(quiet)) as bar:
        result = evaluate_retrieval(
            clip, data, ks, on_batch=lambda d, s: bar and bar.update(0, advance=d + s), **options
        )
    if report:
        summary = write_retrieval_report(result, report, clip.spec, clip.fingerprint)
    else:
        summary = summary_dict(result, clip.spec, clip.fingerprint)
    if fmt == "json":
        typer.echo(json.dumps(summary, indent=2))
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"{summary['dataset']}: {summary['images']} images, {summary['captions']} captions")
        for col in ("", "text → image", "image → text"):
            table.add_column(col, justify="right")
        for k in ks:
            m = summary["metrics"]
            table.add_row(f"R@{k}", f"{m[f'image_retrieval_recall@{k}']:.2%}", f"{m[f'text_retrieval_recall@{k}']:.2%}")
        Console(highlight=False).print(table)
    for path, reason in result.skipped if not quiet else []:
        progress.log(f"skipped {path}: {reason}")
    if report and not quiet:
        progress.log(f"report written to {report} (open {report / 'report.html'})")
