"""`zsclip search`: the stored images most like a text, an image or a fitted class, best first."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from zsclip.classify.output import format_for_path
from zsclip.cli.common import (
    choice,
    fitted_classifier,
    model_for_classifier,
    read_options,
    results,
)
from zsclip.cli.index import index_with_progress
from zsclip.cli.options import (
    INPUT,
    MODEL,
    OUTPUT,
    SPEED,
    Backend,
    Device,
    Limits,
    Options,
    Quiet,
    Speed,
    Walk,
    When,
    grouped,
    option,
)
from zsclip.core import atomic, progress
from zsclip.core.defaults import DEFAULT_MODEL, FORMATS
from zsclip.core.errors import UsageError
from zsclip.core.paths import check_output_dir, check_output_file
from zsclip.core.wording import plural
from zsclip.engines import ReadOptions
from zsclip.evaluate.recall_report import write_hits, write_search_report
from zsclip.pipeline.sources import expand_sources
from zsclip.retrieval.parquet import read_export, search_embeddings
from zsclip.retrieval.search import Hit, check_search_options, class_search, query_vector, search
from zsclip.store.cache import Cache


@dataclass
class Query(Options):
    """What to look for, besides the QUERY text."""

    image: Annotated[Path | None, option(panel=INPUT, help="Search by this image; all arguments are then PATHs.")] = (
        None
    )
    add: Annotated[list[str] | None, option("--add", panel=INPUT, help="Add this text to the query (repeatable).")] = (
        None
    )
    subtract: Annotated[
        list[str] | None,
        option("--subtract", panel=INPUT, help="Subtract this text from the query (repeatable)."),
    ] = None
    templates: Annotated[
        str | None, option("--templates", "-t", panel=MODEL, help="Ensemble the query over a template set.")
    ] = None


@dataclass
class Hits(Options):
    """How many results, and where they go."""

    top: Annotated[int, option("--top", "-n", panel=OUTPUT, help="How many results.")] = 10
    threshold: Annotated[float | None, option(panel=OUTPUT, help="Leave out results below this cosine similarity.")] = (
        None
    )
    fmt: Annotated[
        str | None,
        option(
            "--format",
            "-f",
            panel=OUTPUT,
            show_default=False,
            help="table, csv, json or jsonl (default: by --output's extension, else table on a terminal, else jsonl).",
        ),
    ] = None
    output: Annotated[Path | None, option("--output", "-o", panel=OUTPUT, help="Write results to FILE.")] = None
    report: Annotated[Path | None, option(panel=OUTPUT, help="Write search.html with thumbnails here.")] = None

    def check(self) -> Hits:
        """The usage errors of these options, before any model loads; fills in the format."""

        choice("--format", self.fmt, FORMATS)
        check_search_options(self.top, self.threshold)
        self.output = check_output_file(self.output, "--output")
        implied = format_for_path(str(self.output)) if self.output else None
        if self.fmt is not None and implied is not None and self.fmt != implied:
            raise UsageError(
                f"--format {self.fmt} but --output {self.output} is named as {implied}: drop --format or rename it"
            )
        if self.report is not None:
            check_output_dir(self.report, "--report")
        self.fmt = self.fmt or implied or ("table" if results().isatty() else "jsonl")
        return self


@grouped
def search_cmd(
    query: Annotated[str | None, typer.Argument(help="What to find, in words.", show_default=False)] = None,
    paths: Annotated[
        list[str] | None,
        typer.Argument(help="Search images under these (default: the current folder).", show_default=False),
    ] = None,
    embeddings: Annotated[
        Path | None, option(panel=INPUT, help="Search Parquet embeddings (zsclip index --embeddings-out).")
    ] = None,
    approximate: Annotated[bool, option("--approximate", panel=SPEED, help="faiss IVF index (zsclip[faiss]).")] = False,
    spec: Annotated[
        str | None,
        option(
            "--model",
            "-m",
            panel=MODEL,
            show_default=False,
            help=f"Model spec (default: the model an --embeddings export was made with, else {DEFAULT_MODEL}).",
        ),
    ] = None,
    classifier_file: Annotated[
        Path | None,
        option(
            "--classifier",
            panel=MODEL,
            show_default=False,
            help="A classifier from zsclip fit: QUERY is one of its classes, and images are ranked by its "
            "probability (--threshold is then a probability).",
        ),
    ] = None,
    *,
    ask: Query,
    hits: Hits,
    when: When,
    walk: Walk,
    limits: Limits,
    device: Device,
    backend: Backend,
    speed: Speed,
    quiet: Quiet,
) -> None:
    """Find the images most like a text (or --image), best first with their cosine similarity.

    Images under PATH that are not indexed yet are indexed first. Query arithmetic: "dog" --add beach
    --subtract people."""

    if ask.image is not None and query is not None:  # with --image every positional argument is a PATH
        query, paths = None, [query, *(paths or [])]
    if query is None and ask.image is None:
        raise UsageError("give a QUERY text or --image FILE")
    read = read_options(speed, limits, walk=walk)
    where = when.filter()
    hits.check()
    backend.check()
    if embeddings is not None and paths:
        raise UsageError("--embeddings searches the whole export; a PATH does not apply (leave it out)")
    if embeddings is not None:
        spec = spec or read_export(embeddings).spec  # the vectors' own model, recorded in the export
    sources = expand_sources(paths or ["."]) if embeddings is None else []
    if where.active and embeddings is not None:
        raise UsageError("--taken-after, --taken-before, --camera and --has-gps filter the store, not --embeddings")
    if classifier_file is not None:
        if where.active:
            raise UsageError("--taken-after, --taken-before, --camera and --has-gps filter text and image searches")
        if embeddings is not None or ask.image is not None or ask.add or ask.subtract:
            raise UsageError("--classifier ranks by a class: leave out --embeddings, --image, --add and --subtract")
        spec = model_for_classifier(spec, classifier_file)
        return _class_search(query, classifier_file, paths, sources, spec, hits, (device, backend), read, quiet.quiet)
    spec = spec or DEFAULT_MODEL
    _search(
        query, paths, sources, spec, embeddings, approximate, ask, hits, (device, backend), (read, where), quiet.quiet
    )


def _search(query, paths, sources, spec, embeddings, approximate, ask: Query, hits: Hits, runtime, reading, quiet):
    read, where = reading

    cache = Cache()
    device, backend = runtime
    clip = backend.load(spec, device, cache, quiet)
    # The query first, so a bad --image fails before any indexing.
    q = query_vector(
        clip,
        query,
        image=ask.image,
        add=ask.add or [],
        subtract=ask.subtract or [],
        templates=ask.templates,
        cache=cache,
        exact=read.exact,
    )
    if embeddings is not None:  # vectors exported by `zsclip index --embeddings-out`: no store, no indexing
        found = _search_parquet(embeddings, q, hits.top, hits.threshold, clip.fingerprint)
    else:
        found = _search_store(clip, q, sources, hits, approximate, quiet, read.but(cache=cache), where)
    _write_hits(found, hits)
    if hits.report:
        described = {
            "query": query,
            "image": str(ask.image) if ask.image else None,
            "add": ask.add,
            "subtract": ask.subtract,
            "paths": ", ".join(paths or ["."]),
            "model": clip.spec,
            "templates": ask.templates,
            **where.to_dict(),
        }
        page = write_search_report(found, hits.report, described)
        if not quiet:
            progress.log(f"report written to {page}")
    if not found and not quiet:
        below = f" at or above --threshold {hits.threshold}" if hits.threshold is not None else ""
        progress.log("no results" + below)


def _write_hits(found, hits: Hits) -> None:
    """The hits to --output FILE (whole, or not at all) or stdout, in --format."""

    with (
        atomic.atomic_open(hits.output, "w", encoding="utf-8", newline="")
        if hits.output
        else contextlib.nullcontext() as out
    ):
        write_hits(found, hits.fmt, out or results())


def _class_search(label, classifier_file, paths, sources, spec, hits: Hits, runtime, read, quiet: bool) -> None:

    cache = Cache()
    device, backend = runtime
    clip = backend.load(spec, device, cache, quiet)
    clf = fitted_classifier(classifier_file, clip, quiet)
    if label not in clf.labels:
        class_search(clip, clf, label)  # the one-line error naming the classes
    index_with_progress(clip, sources, progress.enabled(quiet), True, None, read.but(cache=cache))
    found = class_search(clip, clf, label, sources, hits.top, threshold=hits.threshold, exact=read.exact, cache=cache)
    _write_hits(found, hits)
    if not found and not quiet:
        progress.log("no results")


def _search_store(clip, q, sources, hits: Hits, approximate: bool, quiet: bool, read: ReadOptions, where=None):
    """Index what is new under the sources (one line for the files that cannot be read), then search the store."""

    indexed = index_with_progress(clip, sources, progress.enabled(quiet), True, None, read)
    if not quiet:
        if indexed.new + indexed.changed:
            progress.log(f"indexed {plural(indexed.new + indexed.changed, 'new or changed image')} first")
        if indexed.skipped:  # one line, not every file again on every search: `zsclip index` lists them
            folders, n = " ".join(p for p, _ in sources), len(indexed.skipped)
            progress.log(
                f"{plural(n, 'file')} under {folders} could not be read and {'is' if n == 1 else 'are'} "
                f"not searched (zsclip index {folders} lists them)"
            )
    return search(
        clip,
        q,
        sources,
        hits.top,
        threshold=hits.threshold,
        index_first=False,
        approximate=approximate,
        exact=read.exact,
        cache=read.cache,
        read=read,
        where=where,
    )


def _search_parquet(directory: Path, query, top: int, threshold: float | None, fingerprint: str):

    found = search_embeddings(directory, query, top=top, fingerprint=fingerprint)
    kept = [h for h in found if threshold is None or h.score >= threshold]
    return [Hit(rank, h.path, h.score) for rank, h in enumerate(kept, 1)]
