"""`zsclip index`: every image under the PATHs into the image-embedding store (or Parquet shards), for search
and classify to reuse."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Annotated

import typer

from zsclip.classify.output import FailuresLog
from zsclip.classify.predict import Skipped
from zsclip.cli.common import (
    echo,
    engine_options,
    read_options,
)
from zsclip.cli.options import (
    OUTPUT,
    Backend,
    Cluster,
    Device,
    Limits,
    ModelOpt,
    Quiet,
    Shard,
    Speed,
    Walk,
    grouped,
    option,
)
from zsclip.core import progress
from zsclip.core.defaults import DEFAULT_MODEL
from zsclip.core.errors import ZsclipError
from zsclip.core.paths import check_output_file
from zsclip.core.wording import all_skipped, plural
from zsclip.engines import ReadOptions
from zsclip.pipeline.sources import check_sources, count_candidates
from zsclip.retrieval.parquet import check_export_dir, export_embeddings
from zsclip.retrieval.search import index
from zsclip.store.cache import Cache

PathsArg = Annotated[
    list[str], typer.Argument(help="Image files, folders, or @list.txt files of paths.", show_default=False)
]
FailuresOpt = Annotated[Path | None, option(panel=OUTPUT, help="Write skipped files and reasons to FILE (JSONL).")]


def index_with_progress(
    clip, sources, show: bool, quiet: bool, failures: Path | None, read: ReadOptions, runtime=None, prune=False
):
    """zsclip.index with a progress bar, skipped files on stderr and in --failures; returns the IndexResult."""

    with progress.bar("indexing", None, "img", show) as bar:
        if bar:
            threading.Thread(
                target=lambda: bar.update(0, total=count_candidates(sources, read.recursive)), daemon=True
            ).start()

        def tick(done: int, skipped: int) -> None:
            if bar:
                bar.update(0, advance=done + skipped)

        result = index(clip, sources, read, runtime, prune=prune, cache=read.cache, on_batch=tick)
    if not quiet:
        for path, reason in result.skipped:
            progress.log(f"skipped {path}: {reason}")
    if failures:
        with FailuresLog(failures) as log:
            for path, reason in result.skipped:
                log.write(Skipped(path, reason))
    return result


@grouped
def index_cmd(
    paths: PathsArg,
    spec: ModelOpt = DEFAULT_MODEL,
    prune: Annotated[
        bool, option("--prune", panel=OUTPUT, help="Remove stored rows of files that no longer exist.")
    ] = False,
    failures: FailuresOpt = None,
    embeddings_out: Annotated[
        Path | None,
        option(
            panel=OUTPUT,
            help="Write the embeddings as Parquet shards (path, content hash, model fingerprint, vector) to DIR "
            "instead of the store: how a cluster without a shared disk returns them (zsclip search --embeddings).",
        ),
    ] = None,
    *,
    walk: Walk,
    limits: Limits,
    device: Device,
    backend: Backend,
    speed: Speed,
    quiet: Quiet,
    shard: Shard,
    cluster: Cluster,
) -> None:
    """Put every image under PATH into the image-embedding store, for `zsclip search` (and classify) to reuse.

    Incremental: only new or changed files are encoded; moved or renamed files are found by content hash. Prints
    the counts as JSON: indexed, new, reused, changed, moved, skipped, missing (stored, file gone), pruned."""

    read = read_options(speed, limits, walk=walk).but(shard=shard.parsed())
    runtime = engine_options(cluster)
    if failures is not None:
        failures = check_output_file(failures, "--failures")
    if embeddings_out is not None:
        check_export_dir(embeddings_out)
    sources = check_sources(paths, walk.recursive)

    backend.check()
    cache = Cache()
    clip = backend.load(spec, device, cache, quiet.quiet)
    quiet = quiet.quiet
    if embeddings_out is not None:
        written = export_embeddings(clip, sources, embeddings_out, read.but(cache=cache), runtime)
        echo(json.dumps({"embeddings": written, "out": str(embeddings_out)}))
        if not quiet:
            progress.log(f"wrote {written} embeddings to {embeddings_out} (zsclip search --embeddings)")
        return
    result = index_with_progress(
        clip, sources, progress.enabled(quiet), quiet, failures, read.but(cache=cache), runtime, prune
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
