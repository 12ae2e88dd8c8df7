"""`zsclip classify`: labels and probabilities per image, to stdout or a resumable file, optionally sorted into
folders by label and shown in a gallery."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from zsclip.classify.gallery import Gallery, check_report_dir
from zsclip.classify.output import OutputPlan, plan_output, resolved_inputs
from zsclip.classify.predict import check_options
from zsclip.classify.run import Counts, run
from zsclip.classify.sort import Sorter, check_sort_target
from zsclip.cli.common import (
    build_with_progress,
    engine_options,
    fitted_classifier,
    model_for_classifier,
    read_options,
    results,
)
from zsclip.cli.options import (
    INPUT,
    OUTPUT,
    Backend,
    ClassifierOpt,
    Cluster,
    Device,
    Limits,
    ModelOpt,
    Options,
    Quiet,
    Shard,
    Speed,
    Store,
    TemplatesOpt,
    Walk,
    grouped,
    option,
)
from zsclip.core import progress
from zsclip.core.defaults import DEFAULT_MODEL, FORMATS
from zsclip.core.errors import UsageError
from zsclip.core.limits import check_ranking
from zsclip.core.wording import plural
from zsclip.fewshot.files import load as load_classifier_file
from zsclip.models import fingerprint_spec
from zsclip.photos.xmp import TagWriter
from zsclip.pipeline.sources import Exclude, check_sources, expand_sources, first_image
from zsclip.store.cache import Cache
from zsclip.zeroshot.prompts import class_names


@dataclass
class Records(Options):
    """Where the records go and what they hold."""

    fmt: Annotated[
        str | None,
        option(
            "--format",
            "-f",
            panel=OUTPUT,
            show_default=False,
            help=f"Output format: {', '.join(FORMATS)} (default: by --output's extension, else table on a "
            "terminal, else jsonl).",
        ),
    ] = None
    output: Annotated[Path | None, option("--output", "-o", panel=OUTPUT, help="Write results to FILE.")] = None
    resume: Annotated[
        bool,
        option(
            "--resume",
            panel=OUTPUT,
            help="Continue an interrupted run: keep the records in OUTPUT.partial (or the sort, or the gallery) "
            "and classify only the rest.",
        ),
    ] = False
    failures: Annotated[Path | None, option(panel=OUTPUT, help="Write skipped files and reasons to FILE (JSONL).")] = (
        None
    )
    strict: Annotated[bool, option("--strict", panel=OUTPUT, help="Fail the run (exit 1) on the first bad file.")] = (
        False
    )
    top_k: Annotated[
        int | None,
        option(panel=OUTPUT, help="Classes listed per image (default: 3, or fewer classes).", show_default=False),
    ] = None
    threshold: Annotated[
        float | None, option(panel=OUTPUT, help="Label 'unknown' when the top probability is below P.")
    ] = None
    exif: Annotated[
        bool, option("--exif", panel=OUTPUT, help="Add the taken, camera and gps columns (from each photo's EXIF).")
    ] = False


@dataclass
class Tags(Options):
    """Keywords a photo manager reads (zsclip.photos.xmp)."""

    write_tags: Annotated[
        str | None,
        option(
            panel=OUTPUT,
            show_default=False,
            help="Write each label as a keyword (zsclip|LABEL) into an XMP sidecar beside the photo (xmp), or into "
            "the photo itself (embedded); keywords already there are kept.",
        ),
    ] = None
    tags_top_k: Annotated[
        int | None,
        option(panel=OUTPUT, show_default=False, help="With --write-tags: the top K labels, not only the first."),
    ] = None
    tags_threshold: Annotated[
        float | None,
        option(panel=OUTPUT, show_default=False, help="With --write-tags: only labels with at least this probability."),
    ] = None
    sidecar: Annotated[
        str | None,
        option(
            panel=OUTPUT,
            show_default=False,
            help="With --write-tags xmp: sidecar names beside (NAME.EXT.xmp: digiKam, darktable; the default) or "
            "lightroom (NAME.xmp).",
        ),
    ] = None

    def writer(self, dry_run: bool):
        if self.write_tags is None:
            if self.tags_top_k is not None or self.tags_threshold is not None or self.sidecar is not None:
                raise UsageError("--tags-top-k, --tags-threshold and --sidecar need --write-tags xmp")
            return None
        return TagWriter(self.write_tags, self.sidecar or "beside", self.tags_top_k, self.tags_threshold, dry_run)


@dataclass
class Sorting(Options):
    """--sort-into and the gallery."""

    sort_into: Annotated[
        Path | None, option(panel=OUTPUT, help="Put every classified image into DIR/LABEL/ (manifest.csv).")
    ] = None
    mode: Annotated[
        str | None, option(panel=OUTPUT, help="With --sort-into: copy (default), link or move.", show_default=False)
    ] = None
    dry_run: Annotated[
        bool, option("--dry-run", panel=OUTPUT, help="With --sort-into: print the plan, touch nothing.")
    ] = False
    report: Annotated[Path | None, option(panel=OUTPUT, help="Write a gallery of the results (DIR/gallery.html).")] = (
        None
    )
    follow_links: Annotated[
        bool,
        option(
            "--follow-links",
            panel=OUTPUT,
            help="With --mode move: also move files reached through a symbolic link to a folder outside the PATHs "
            "(by default they are left where they are, and said).",
        ),
    ] = False


@grouped
def classify_cmd(
    paths: Annotated[
        list[str], typer.Argument(help="Image files, folders, or @list.txt files of paths.", show_default=False)
    ],
    classes: Annotated[str | None, option("--classes", "-c", panel=INPUT, help="Comma-separated class names.")] = None,
    classes_file: Annotated[
        Path | None, option(panel=INPUT, help="Class names, one per line, or a classes.tsv/CSV table.")
    ] = None,
    spec: ModelOpt = DEFAULT_MODEL,
    templates: TemplatesOpt = "default",
    classifier_file: ClassifierOpt = None,
    *,
    records: Records,
    sorting: Sorting,
    tags: Tags,
    walk: Walk,
    limits: Limits,
    device: Device,
    backend: Backend,
    speed: Speed,
    store: Store,
    quiet: Quiet,
    shard: Shard,
    cluster: Cluster,
) -> None:
    """Classify images by class names: a label, its probability and the top-k classes per image.

    With --output, results are written as they come to OUTPUT.partial, which becomes OUTPUT when the run ends;
    after a crash or kill, the same command with --resume continues where it stopped (also --sort-into and
    --report)."""
    names, fitted = _class_names(classes, classes_file, classifier_file, templates)
    spec = model_for_classifier(spec, classifier_file)
    read = read_options(speed, limits, store, walk).but(shard=shard.parsed())
    runtime = engine_options(cluster)
    check_ranking(records.top_k, records.threshold)
    backend.check()
    writer = tags.writer(sorting.dry_run)  # None without --write-tags; usage errors before the model loads
    made_of = _made_of(spec, names, templates, fitted, records, speed, backend, shard, paths)
    plan = _plan(records, sorting, made_of)
    settings = {"classes": names, "threshold": records.threshold}  # a resumed sort must have been made with these
    sources = _sources(paths, walk.recursive, records.resume, sorting, settings)
    if sources is None or plan.complete:
        return
    cache = Cache()
    clip = backend.load(spec, device, cache, quiet.quiet, sources)
    show = progress.enabled(quiet.quiet)
    if fitted:
        clf = fitted_classifier(classifier_file, clip, quiet.quiet)
    else:
        clf = build_with_progress(clip, names, templates, cache, show, quiet.quiet)
    top_k = _top_k(clf, records)
    sorter, gallery = _sinks(sorting, records, clf, settings, sources)
    counts = run(
        clip, clf, sources, plan, read, runtime, inputs=paths, top_k=top_k, threshold=records.threshold,
        strict=records.strict, quiet=quiet.quiet, show=show, sorter=sorter, gallery=gallery,
        sinks=[writer] if writer else [], exif=records.exif, stdout=results(),
        made_of=made_of(clip.fingerprint) if records.output else None,
    )  # fmt: skip
    if not quiet.quiet:
        _summary(counts, plan, sorter, gallery, sorting)
        if writer is not None and not sorting.dry_run:
            where = "photos" if writer.kind == "embedded" else "XMP sidecars"
            progress.log(f"keywords written into {plural(writer.written, 'file')} ({where})")


def _made_of(spec, names, templates, fitted, records, speed, backend, shard, paths):
    """What this run is made of, for the record of a finished --output (checked by a later --resume)."""

    def made_of(fingerprint: str | None = None) -> dict:
        return {
            "model": fingerprint or fingerprint_spec(spec),
            "classes": names,
            "templates": templates,
            "classifier": fitted,
            "top_k": records.top_k,
            "threshold": records.threshold,
            "exact": speed.exact_preprocess,
            "backend": backend.backend,
            "shard": shard.shard,
            "inputs": resolved_inputs(paths),
        }

    return made_of


def _plan(records: Records, sorting: Sorting, made_of) -> OutputPlan:
    """Where the records go, checked before the model loads; a finished --output is said and left alone."""
    if records.resume and records.output is None and sorting.sort_into is None and sorting.report is None:
        raise UsageError("--resume needs --output FILE, --sort-into DIR or --report DIR (the run to continue)")
    plan = plan_output(
        records.output,
        records.fmt,
        failures=records.failures,
        resume=records.resume and records.output is not None,
        terminal=results().isatty(),
        run=made_of,
    )
    if plan.complete:
        progress.log(f"{plan.output} is complete already (no {plan.output}.partial to resume); nothing to do")
    return plan


def _top_k(clf, records: Records) -> int:
    k = check_options(clf, records.top_k, records.threshold)
    if records.top_k is not None and records.top_k > k:
        progress.log(f"note: --top-k {records.top_k} is more than the {k} classes; listing {k}")
    return k


def _summary(counts: Counts, plan: OutputPlan, sorter, gallery, sorting: Sorting) -> None:
    """What the run did, on stderr."""
    for line in sorter.summary() if sorter else []:
        progress.log(line)
    if gallery:
        progress.log(f"gallery written to {sorting.report / 'gallery.html'}")
    listed = f" (listed in {plan.failures})" if plan.failures and counts.skipped else ""
    resumed = f" ({counts.resumed} more from the interrupted run)" if counts.resumed else ""
    skipped = f", skipped {plural(counts.skipped, 'bad file')}{listed}" if counts.skipped else ""
    where = f"; results in {plan.output}" if plan.output else ""
    progress.log(f"classified {plural(counts.done, 'image')}{resumed}{skipped}{where}")
    if counts.rechecked:
        near = plural(counts.rechecked, "image")
        progress.log(f"onnx-int8: {near} near a tie re-encoded by the fp32 tower, so every label is fp32's")


def _class_names(classes, classes_file, classifier_file, templates: str):
    """(class names, the classifier file's checksum or None): from --classes/--classes-file, or a --classifier."""
    if classifier_file is None:
        return class_names(classes, classes_file), None
    if classes is not None or classes_file is not None:
        raise UsageError("--classifier FILE brings its own classes: leave out --classes and --classes-file")
    if templates != "default":
        raise UsageError("--templates: a --classifier file brings its own templates; leave out -t")
    _, meta = load_classifier_file(classifier_file)
    return list(meta["classnames"]), meta["sha256"]


def _sources(paths, recursive: bool, resume: bool, sorting: Sorting, settings: dict):
    """The PATH arguments, checked with --sort-into and --report before the model loads; None when a resumed sort
    finds its inbox emptied (a finished sort, not an error: said, and nothing to do)."""
    if resume and sorting.sort_into is not None and (sorting.sort_into / "manifest.csv").exists():
        sources = expand_sources(paths)
        folder = Exclude.folder_id(sorting.sort_into)
        if not first_image(sources, recursive, Exclude(folders=frozenset([folder]))):
            _check_sinks(sorting, resume, sources, recursive, settings)
            progress.log(f"nothing new to sort under {', '.join(paths)}: every image there is in {sorting.sort_into}")
            return None
    else:
        sources = check_sources(paths, recursive)
    _check_sinks(sorting, resume, sources, recursive, settings)
    return sources


def _check_sinks(sorting: Sorting, resume: bool, sources, recursive: bool, settings: dict) -> None:
    """The usage errors of --sort-into, --mode, --dry-run and --report, before the model loads."""
    if sorting.sort_into is None and (sorting.mode is not None or sorting.dry_run):
        raise UsageError(f"{'--mode' if sorting.mode is not None else '--dry-run'} needs --sort-into DIR")
    if sorting.sort_into is not None:
        check_sort_target(
            sorting.sort_into,
            sorting.mode or "copy",
            dry_run=sorting.dry_run,
            resume=resume,
            sources=sources,
            recursive=recursive,
            settings=settings,
        )
    if sorting.report is not None:
        check_report_dir(sorting.report, resume)


def _sinks(sorting: Sorting, records: Records, clf, settings: dict, sources):
    """The Sorter and the Gallery the records also go to (each None unless asked for)."""
    sorter = gallery = None
    if sorting.sort_into is not None:
        sorter = Sorter(
            sorting.sort_into,
            sorting.mode or "copy",
            dry_run=sorting.dry_run,
            resume=records.resume,
            labels=clf.labels,
            settings=settings,
            plan=results(),
            sources=sources,
            follow_links=sorting.follow_links,
        )
    if sorting.report is not None:
        gallery = Gallery(sorting.report, resume=records.resume, title=f"zsclip: {', '.join(clf.labels[:8])}")
    return sorter, gallery
