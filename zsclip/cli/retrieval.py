"""`zsclip index` and `zsclip search`: the image-embedding store as a search index (text or image queries)."""

from __future__ import annotations

import contextlib
import json
import threading
from pathlib import Path
from typing import Annotated

import typer

from .. import atomic, progress
from ..defaults import DEFAULT_MODEL, FORMATS
from ..errors import UsageError, ZsclipError, all_skipped, plural
from .common import (
    DEFAULT_READ,
    ActorsOpt,
    BatchOpt,
    CpusPerActorOpt,
    DeviceOpt,
    EngineOpt,
    ExactOpt,
    FileTimeoutOpt,
    GpusPerActorOpt,
    MaxPixelsOpt,
    ModelOpt,
    PrecisionOpt,
    QuietOpt,
    RayAddressOpt,
    ShardOpt,
    WorkersOpt,
    choice,
    echo,
    engine_options,
    env,
    results,
)

RecursiveOpt = Annotated[
    bool, typer.Option("--recursive/--no-recursive", envvar=env("recursive"), help="Walk into subfolders.")
]
FailuresOpt = Annotated[
    Path | None, typer.Option(envvar=env("failures"), help="Write skipped files and reasons to FILE (JSONL).")
]


def _index_with_progress(clip, sources, show: bool, quiet: bool, failures: Path | None, **options):
    """zsclip.index with a progress bar, skipped files on stderr and in --failures; returns the IndexResult."""
    from ..output import FailuresLog
    from ..retrieval import index
    from ..sources import count_candidates

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
        from ..classify import Skipped

        with FailuresLog(failures) as log:
            for path, reason in result.skipped:
                log.write(Skipped(path, reason))
    return result


def index_cmd(
    paths: Annotated[
        list[str], typer.Argument(help="Image files, folders, or @list.txt files of paths.", show_default=False)
    ],
    model: ModelOpt = DEFAULT_MODEL,
    prune: Annotated[
        bool, typer.Option("--prune", envvar=env("prune"), help="Remove stored rows of files that no longer exist.")
    ] = False,
    failures: FailuresOpt = None,
    recursive: RecursiveOpt = True,
    batch_size: BatchOpt = None,
    workers: WorkersOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = None,
    exact_preprocess: ExactOpt = False,
    max_pixels: MaxPixelsOpt = DEFAULT_READ["max_pixels"],
    file_timeout: FileTimeoutOpt = DEFAULT_READ["file_timeout"],
    embeddings_out: Annotated[
        Path | None,
        typer.Option(
            envvar=env("embeddings_out"),
            help="Write the embeddings as Parquet shards (path, content hash, model fingerprint, vector) to DIR "
            "instead of the store: how a cluster without a shared disk returns them (zsclip search --embeddings).",
        ),
    ] = None,
    shard: ShardOpt = None,
    engine: EngineOpt = "local",
    ray_address: RayAddressOpt = None,
    actors: ActorsOpt = None,
    gpus_per_actor: GpusPerActorOpt = None,
    cpus_per_actor: CpusPerActorOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Put every image under PATH into the image-embedding store, for `zsclip search` (and classify) to reuse.

    Incremental: only new or changed files are encoded; moved or renamed files are found by content hash. Prints
    the counts as JSON: indexed, new, reused, changed, moved, skipped, missing (stored, file gone), pruned."""
    from ..limits import check_limits
    from ..output import check_output_file
    from ..sources import check_sources, parse_shard

    check_limits(batch_size, workers, max_pixels, file_timeout)
    if failures is not None:
        failures = check_output_file(failures, "--failures")
    run = {**engine_options(engine, ray_address, actors, gpus_per_actor, cpus_per_actor), "shard": parse_shard(shard)}
    if embeddings_out is not None:
        from ..embeddings_io import check_export_dir

        check_export_dir(embeddings_out)
    sources = check_sources(paths, recursive)
    from ..cache import Cache
    from ..models import load_model

    cache = Cache()
    clip = load_model(model, device=device, precision=precision, cache=cache)
    options = dict(batch_size=batch_size, workers=workers, recursive=recursive, exact=exact_preprocess,
                   max_pixels=max_pixels, file_timeout=file_timeout, **run)  # fmt: skip
    if embeddings_out is not None:
        from ..embeddings_io import export_embeddings

        written = export_embeddings(clip, sources, embeddings_out, cache=cache, **options)
        echo(json.dumps({"embeddings": written, "out": str(embeddings_out)}))
        if not quiet:
            progress.log(f"wrote {written} embeddings to {embeddings_out} (zsclip search --embeddings)")
        return
    result = _index_with_progress(
        clip, sources, progress.enabled(quiet), quiet, failures, prune=prune, cache=cache, **options
    )
    echo(json.dumps(result.to_dict()))
    if result.indexed == 0:
        raise ZsclipError(f"no image could be read: {all_skipped(len(result.skipped))}")
    if not quiet:
        c = result.to_dict()
        gone = f"; {c['missing']} stored files are gone" + (" (pruned)" if prune else " (--prune removes them)")
        progress.log(
            f"indexed {plural(c['indexed'], 'image')}: {c['new']} new, {c['reused']} reused ({c['moved']} moved, "
            f"{c['copied']} copied), "
            f"{c['changed']} changed, {c['skipped']} skipped" + (gone if c["missing"] else "")
        )


def search_cmd(
    query: Annotated[str | None, typer.Argument(help="What to find, in words.", show_default=False)] = None,
    paths: Annotated[
        list[str] | None,
        typer.Argument(help="Search images under these (default: the current folder).", show_default=False),
    ] = None,
    image: Annotated[
        Path | None, typer.Option(envvar=env("image"), help="Search by this image; all arguments are then PATHs.")
    ] = None,
    add: Annotated[list[str] | None, typer.Option("--add", help="Add this text to the query (repeatable).")] = None,
    subtract: Annotated[
        list[str] | None, typer.Option("--subtract", help="Subtract this text from the query (repeatable).")
    ] = None,
    top: Annotated[int, typer.Option("--top", "-n", envvar=env("top"), help="How many results.")] = 10,
    threshold: Annotated[
        float | None, typer.Option(envvar=env("threshold"), help="Leave out results below this cosine similarity.")
    ] = None,
    templates: Annotated[
        str | None,
        typer.Option("--templates", "-t", envvar=env("templates"), help="Ensemble the query over a template set."),
    ] = None,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            "-f",
            envvar=env("format"),
            help="table, csv, json or jsonl (default: by --output's extension, else table on a terminal, else jsonl).",
            show_default=False,
        ),
    ] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write results to FILE.")] = None,
    report: Annotated[Path | None, typer.Option(help="Write search.html with thumbnails here.")] = None,
    embeddings: Annotated[
        Path | None,
        typer.Option(envvar=env("embeddings"), help="Search Parquet embeddings (zsclip index --embeddings-out)."),
    ] = None,
    approximate: Annotated[
        bool, typer.Option("--approximate", envvar=env("approximate"), help="faiss IVF index (zsclip[faiss]).")
    ] = False,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            envvar=env("model"),
            help=f"Model spec (default: the model an --embeddings export was made with, else {DEFAULT_MODEL}).",
            show_default=False,
        ),
    ] = None,
    recursive: RecursiveOpt = True,
    batch_size: BatchOpt = None,
    workers: WorkersOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = None,
    exact_preprocess: ExactOpt = False,
    max_pixels: MaxPixelsOpt = DEFAULT_READ["max_pixels"],
    file_timeout: FileTimeoutOpt = DEFAULT_READ["file_timeout"],
    quiet: QuietOpt = False,
) -> None:
    """Find the images most like a text (or --image), best first with their cosine similarity.

    Images under PATH that are not indexed yet are indexed first. Query arithmetic: "dog" --add beach
    --subtract people."""
    from ..limits import check_limits
    from ..output import check_output_dir, check_output_file, format_for_path
    from ..retrieval import check_search_options
    from ..sources import expand_sources

    if image is not None and query is not None:  # with --image every positional argument is a PATH
        query, paths = None, [query, *(paths or [])]
    if query is None and image is None:
        raise UsageError("give a QUERY text or --image FILE")
    choice("--format", fmt, FORMATS)
    check_limits(batch_size, workers, max_pixels, file_timeout)
    check_search_options(top, threshold)
    output = check_output_file(output, "--output")
    implied = format_for_path(str(output)) if output else None
    if fmt is not None and implied is not None and fmt != implied:
        raise UsageError(f"--format {fmt} but --output {output} is named as {implied}: drop --format or rename it")
    if report is not None:
        check_output_dir(report, "--report")
    if embeddings is not None and paths:
        raise UsageError("--embeddings searches the whole export; a PATH does not apply (leave it out)")
    if embeddings is not None:
        from ..embeddings_io import read_export

        model = model or read_export(embeddings).spec  # the vectors' own model, recorded in the export
    model = model or DEFAULT_MODEL
    sources = expand_sources(paths or ["."]) if embeddings is None else []
    fmt = fmt or (format_for_path(str(output)) if output else None) or ("table" if results().isatty() else "jsonl")
    from ..cache import Cache
    from ..models import load_model
    from ..retrieval import query_vector, search
    from ..retrieval_report import write_hits, write_search_report

    cache = Cache()
    clip = load_model(model, device=device, precision=precision, cache=cache)
    options = dict(cache=cache, exact=exact_preprocess, batch_size=batch_size, workers=workers, recursive=recursive,
                   max_pixels=max_pixels, file_timeout=file_timeout)  # fmt: skip
    # The query first, so a bad --image fails before any indexing.
    q = query_vector(clip, query, image=image, add=add or [], subtract=subtract or [], templates=templates,
                     cache=cache, exact=exact_preprocess)  # fmt: skip
    if embeddings is not None:  # vectors exported by `zsclip index --embeddings-out`: no store, no indexing
        hits = _search_parquet(embeddings, q, top, threshold, clip.fingerprint)
    else:
        indexed = _index_with_progress(clip, sources, progress.enabled(quiet), True, None, **options)
        if not quiet:
            if indexed.new + indexed.changed:
                progress.log(f"indexed {plural(indexed.new + indexed.changed, 'new or changed image')} first")
            if indexed.skipped:  # one line, not every file again on every search: `zsclip index` lists them
                where, n = " ".join(p for p, _ in sources), len(indexed.skipped)
                progress.log(f"{plural(n, 'file')} under {where} could not be read and {'is' if n == 1 else 'are'} "
                             f"not searched (zsclip index {where} lists them)")  # fmt: skip
        hits = search(clip, q, sources, top, threshold=threshold, index_first=False, approximate=approximate,
                      **options)  # fmt: skip
    with atomic.atomic_open(output, "w", encoding="utf-8", newline="") if output else contextlib.nullcontext() as out:
        write_hits(hits, fmt, out or results())
    if report:
        described = {"query": query, "image": str(image) if image else None, "add": add, "subtract": subtract,
                     "paths": ", ".join(paths or ["."]), "model": clip.spec, "templates": templates}  # fmt: skip
        page = write_search_report(hits, report, described)
        if not quiet:
            progress.log(f"report written to {page}")
    if not hits and not quiet:
        progress.log("no results" + (f" at or above --threshold {threshold}" if threshold is not None else ""))


def _search_parquet(directory: Path, query, top: int, threshold: float | None, fingerprint: str):
    from ..embeddings_io import search_embeddings
    from ..retrieval import Hit

    found = search_embeddings(directory, query, top=top, fingerprint=fingerprint)
    kept = [h for h in found if threshold is None or h.score >= threshold]
    return [Hit(rank, h.path, h.score) for rank, h in enumerate(kept, 1)]
