"""`zsclip classify`: labels and probabilities per image."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .. import progress
from ..defaults import DEFAULT_MODEL, FORMATS
from ..errors import UsageError, plural
from ..limits import check_ranking
from ..sources import parse_shard
from .common import (
    DEFAULT_READ,
    ActorsOpt,
    BackendOpt,
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
    StoreOpt,
    TemplatesOpt,
    WorkersOpt,
    build_with_progress,
    check_backend,
    engine_options,
    env,
    read_options,
    results,
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
    sort_into: Annotated[
        Path | None,
        typer.Option(envvar=env("sort_into"), help="Put every classified image into DIR/<label>/ (manifest.csv)."),
    ] = None,
    mode: Annotated[
        str | None,
        typer.Option(envvar=env("mode"), help="With --sort-into: copy (default), link or move.", show_default=False),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", envvar=env("dry_run"), help="With --sort-into: print the plan, touch nothing.")
    ] = False,
    report: Annotated[
        Path | None, typer.Option(envvar=env("report"), help="Write a gallery of the results (DIR/gallery.html).")
    ] = None,
    quiet: QuietOpt = False,
    shard: ShardOpt = None,
    engine: EngineOpt = "local",
    ray_address: RayAddressOpt = None,
    actors: ActorsOpt = None,
    gpus_per_actor: GpusPerActorOpt = None,
    cpus_per_actor: CpusPerActorOpt = None,
) -> None:
    """Classify images by class names: a label, its probability and the top-k classes per image.

    With --output, results are written as they come to OUTPUT.partial, which becomes OUTPUT when the run ends;
    after a crash or kill, the same command with --resume continues where it stopped (also --sort-into and
    --report)."""
    from ..prompts import class_names

    names = class_names(classes, classes_file)
    read = read_options(batch_size, workers, store, exact_preprocess, max_pixels, file_timeout)
    read.update(engine_options(engine, ray_address, actors, gpus_per_actor, cpus_per_actor), shard=parse_shard(shard))
    check_ranking(top_k, threshold)
    check_backend(backend)
    from ..output import plan_output
    from ..sources import check_sources, expand_sources

    if resume and output is None and sort_into is None and report is None:
        raise UsageError("--resume needs --output FILE, --sort-into DIR or --report DIR (the run to continue)")

    def run(fingerprint=None) -> dict:
        """What this run is made of, for the record of a finished --output (checked by a later --resume)."""
        from ..models import fingerprint_spec
        from ..output import resolved_inputs

        return {"model": fingerprint or fingerprint_spec(model), "classes": names, "templates": templates,
                "top_k": top_k, "threshold": threshold, "exact": exact_preprocess, "backend": backend,
                "shard": shard, "inputs": resolved_inputs(paths)}  # fmt: skip

    plan = plan_output(
        output, fmt, failures=failures, resume=resume and output is not None, terminal=results().isatty(), run=run
    )
    sort_settings = {"classes": names, "threshold": threshold}
    if resume and sort_into is not None and (sort_into / "manifest.csv").exists():
        sources = _resumed_sources(paths, recursive, sort_into)  # an emptied inbox is a finished sort, not an error
        if sources is None:
            _check_sinks(sort_into, mode, dry_run, report, resume, expand_sources(paths), recursive, sort_settings)
            progress.log(f"nothing new to sort under {', '.join(paths)}: every image there is in {sort_into}")
            return
    else:
        sources = check_sources(paths, recursive)
    _check_sinks(sort_into, mode, dry_run, report, resume, sources, recursive, sort_settings)
    if plan.complete:
        progress.log(f"{plan.output} is complete already (no {plan.output}.partial to resume); nothing to do")
        return

    from ..cache import Cache
    from ..classify import check_options
    from ..models import load_model
    from ..sinks import classify_into

    show = progress.enabled(quiet)
    cache = Cache()
    clip = with_backend(load_model(model, device=device, precision=precision, cache=cache), backend, cache, quiet)
    clf = build_with_progress(clip, names, templates, cache, show, quiet)
    k = check_options(clf, top_k, threshold)
    if top_k is not None and top_k > k:
        progress.log(f"note: --top-k {top_k} is more than the {k} classes; listing {k}")
    sorter = gallery = None
    if sort_into is not None:
        from ..sort import Sorter

        sorter = Sorter(sort_into, mode or "copy", dry_run=dry_run, resume=resume, labels=clf.labels,
                        settings=sort_settings, plan=results())  # fmt: skip
    if report is not None:
        from ..gallery import Gallery

        gallery = Gallery(report, resume=resume, title=f"zsclip: {', '.join(clf.labels[:8])}")
    counts = classify_into(
        clip, clf, sources, plan, inputs=paths, top_k=k, threshold=threshold, strict=strict, quiet=quiet,
        show=show, recursive=recursive, sorter=sorter, gallery=gallery, stdout=results(),
        run=run(clip.fingerprint) if output else None, **read,
    )  # fmt: skip
    for line in sorter.summary() if sorter and not quiet else []:
        progress.log(line)
    if gallery and not quiet:
        progress.log(f"gallery written to {report / 'gallery.html'}")
    if not quiet:
        listed = f" (listed in {plan.failures})" if plan.failures and counts.skipped else ""
        resumed = f" ({counts.resumed} more from the interrupted run)" if counts.resumed else ""
        skipped = f", skipped {plural(counts.skipped, 'bad file')}{listed}" if counts.skipped else ""
        where = f"; results in {plan.output}" if plan.output else ""
        progress.log(f"classified {plural(counts.done, 'image')}{resumed}{skipped}{where}")


def _resumed_sources(paths, recursive, sort_into: Path):
    """The PATH arguments of a resumed sort, or None when none holds an image outside the sort's folder."""
    from ..sources import Exclude, expand_sources, first_image

    sources = expand_sources(paths)
    folder = Exclude.folder_id(sort_into)
    return sources if first_image(sources, recursive, Exclude(folders=frozenset([folder]))) else None


def _check_sinks(sort_into, mode, dry_run, report, resume, sources, recursive, settings) -> None:
    """The usage errors of --sort-into, --mode, --dry-run and --report, before the model loads."""
    if sort_into is None and (mode is not None or dry_run):
        raise UsageError(f"{'--mode' if mode is not None else '--dry-run'} needs --sort-into DIR")
    if sort_into is not None:
        from ..sort import check_sort_target

        check_sort_target(sort_into, mode or "copy", dry_run=dry_run, resume=resume, sources=sources,
                          recursive=recursive, settings=settings)  # fmt: skip
    if report is not None:
        from ..gallery import check_report_dir

        check_report_dir(report, resume)
