"""`zsclip eval`: zero-shot accuracy on a labelled data set, with reports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from .. import progress
from ..defaults import DEFAULT_MODEL
from ..errors import UsageError
from .common import (
    DEFAULT_READ,
    BackendOpt,
    BatchOpt,
    ClassnamesOpt,
    DeviceOpt,
    ExactOpt,
    FileTimeoutOpt,
    LimitOpt,
    MaxPixelsOpt,
    ModelOpt,
    PrecisionOpt,
    QuietOpt,
    RootOpt,
    StoreOpt,
    WorkersOpt,
    build_with_progress,
    check_backend,
    choice,
    env,
    print_table,
    read_options,
    with_backend,
)

DatasetArg = Annotated[
    str,
    typer.Argument(
        help="imagenet-v2 (also imagenet-v2/threshold-0.7 and imagenet-v2/top-images), cifar10, cifar100, "
        "a folder of class folders, or csv:FILE.",
    ),
]


def eval_data(dataset: str, root: Path | None, classnames: str | None, limit: int | None):
    """The data set an eval-like command scores, checked before any model is loaded."""
    from ..datasets import load_dataset

    if limit is not None and limit < 1:
        raise UsageError(f"--limit {limit}: must be at least 1")
    data = load_dataset(dataset, root=str(root) if root else None, classnames=classnames).limit(limit)
    if not data.items:
        raise UsageError(f"{dataset}: no images found")
    return data


def embed_with_progress(clip, dataset, show: bool, quiet: bool, **read):
    """Image embeddings of a data set (reusing the store), with a progress bar and skip lines on stderr."""
    from ..evaluate import embed_dataset

    with progress.bar("encoding images", len(dataset.items), "img", show) as bar:

        def tick(done: int, skipped: int) -> None:
            if bar:
                bar.update(0, advance=done + skipped, extra=f"{skipped} skipped" if skipped else "")

        embedded = embed_dataset(clip, dataset, on_batch=tick, **read)
    if not quiet:
        for path, reason in embedded.skipped:
            progress.log(f"skipped {path}: {reason}")
        if embedded.reused:
            progress.log(f"{embedded.reused} of {len(embedded.paths)} image embeddings came from the image store")
    return embedded


def eval_cmd(
    dataset: DatasetArg,
    model: ModelOpt = DEFAULT_MODEL,
    templates: Annotated[
        str,
        typer.Option(
            "--templates",
            "-t",
            envvar=env("templates"),
            help="Template set or file; 'default' = the data set's own set, else the model's, else imagenet80.",
        ),
    ] = "default",
    root: RootOpt = None,
    classnames: ClassnamesOpt = None,
    limit: LimitOpt = None,
    report: Annotated[
        Path | None, typer.Option(envvar=env("report"), help="Write the full report (JSON, CSV, PNG, HTML) here.")
    ] = None,
    fmt: Annotated[
        str, typer.Option("--format", "-f", envvar=env("format"), help="table or json (the metrics.json content).")
    ] = "table",
    batch_size: BatchOpt = None,
    workers: WorkersOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = None,
    backend: BackendOpt = None,
    store: StoreOpt = True,
    exact_preprocess: ExactOpt = False,
    max_pixels: MaxPixelsOpt = DEFAULT_READ["max_pixels"],
    file_timeout: FileTimeoutOpt = DEFAULT_READ["file_timeout"],
    quiet: QuietOpt = False,
) -> None:
    """Zero-shot accuracy of a model on a labelled data set, with confusion and per-class reports."""
    choice("--format", fmt, ("table", "json"))
    check_backend(backend)
    read = read_options(batch_size, workers, store, exact_preprocess, max_pixels, file_timeout)
    data = eval_data(dataset, root, classnames, limit)

    from ..cache import Cache
    from ..evaluate import resolve_dataset_templates, score
    from ..models import load_model
    from ..report import summary_dict, write_report

    show = progress.enabled(quiet)
    cache = Cache()
    clip = with_backend(load_model(model, device=device, precision=precision, cache=cache), backend, cache, quiet)
    clf = build_with_progress(clip, data.classnames, resolve_dataset_templates(templates, data, clip), cache, show)
    result = score(embed_with_progress(clip, data, show, quiet, **read), clf)
    if report:
        summary = write_report(result, report, clip.spec, clip.fingerprint)
    else:
        summary = summary_dict(result, clip.spec, clip.fingerprint)
    if fmt == "json":
        typer.echo(json.dumps(summary, indent=2))
    else:
        print_table(
            f"{summary['dataset']} · {summary['model']}",
            ["images", "classes", "templates", *summary["metrics"]],
            [
                [
                    str(summary["images"]),
                    str(summary["num_classes"]),
                    f"{summary['templates']} ({summary['num_templates']})",
                    *(f"{v:.2%}" for v in summary["metrics"].values()),
                ]
            ],
        )
    if not quiet and result.skipped:
        progress.log(f"skipped {len(result.skipped)} unreadable files (not counted)")
    if not quiet and report:
        progress.log(f"report written to {report} (open {report / 'report.html'})")
