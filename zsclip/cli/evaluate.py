"""`zsclip eval`: zero-shot accuracy on a labelled data set, with reports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from .. import progress
from ..defaults import DEFAULT_MODEL
from ..errors import UsageError, ZsclipError, plural
from .common import (
    DEFAULT_READ,
    ActorsOpt,
    BackendOpt,
    BatchOpt,
    ClassnamesOpt,
    CpusPerActorOpt,
    DeviceOpt,
    EngineOpt,
    ExactOpt,
    FileTimeoutOpt,
    GpusPerActorOpt,
    LimitOpt,
    MaxPixelsOpt,
    PrecisionOpt,
    QuietOpt,
    RayAddressOpt,
    RootOpt,
    StoreOpt,
    WorkersOpt,
    build_with_progress,
    check_backend,
    choice,
    echo,
    engine_options,
    env,
    print_table,
    read_options,
    with_backend,
)

DatasetArg = Annotated[
    list[str] | None,
    typer.Argument(
        help="imagenet-v2 (also imagenet-v2/threshold-0.7 and imagenet-v2/top-images), cifar10, cifar100, "
        "a folder of class folders, csv:FILE, or CLIP_benchmark's webdataset data sets: wds:DIR (a local copy) "
        "or wds/NAME (wds/cifar10, wds/vtab/flowers: downloaded from the Hugging Face hub on first use). "
        "Several data sets (or several --model) run a grid.",
        show_default=False,
    ),
]
ModelsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--model",
        "-m",
        envvar=env("model"),
        help="Model spec (repeat for a grid): ARCH:TAG, ARCH:/path/weights.pt, hf-hub:org/repo, a model directory "
        f"or a shipped model name. (default: {DEFAULT_MODEL}).",
        show_default=False,
    ),
]


SplitOpt = Annotated[
    str, typer.Option(envvar=env("split"), help="The split of a wds data set (its folder: test, train, ...).")
]
TaskOpt = Annotated[
    str | None,
    typer.Option(
        envvar=env("task"),
        help="classification or retrieval (default: the data set's own, from a wds set's dataset_type.txt).",
        show_default=False,
    ),
]


def eval_data(
    dataset: str,
    root: Path | None,
    classnames: str | None,
    limit: int | None,
    split: str = "test",
    task: str | None = None,
):
    """The data set an eval-like command scores, checked before any model is loaded."""
    from ..datasets import load_dataset

    if limit is not None and limit < 1:
        raise UsageError(f"--limit {limit}: must be at least 1")
    root_dir = str(root) if root else None
    data = load_dataset(dataset, root=root_dir, classnames=classnames, split=split, task=task).limit(limit)
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
    datasets: DatasetArg = None,
    models: ModelsOpt = None,
    models_file: Annotated[
        Path | None, typer.Option("--models", envvar=env("models"), help="Model specs, one per line (a grid).")
    ] = None,
    datasets_file: Annotated[
        Path | None, typer.Option("--datasets", envvar=env("datasets"), help="Data sets, one per line (a grid).")
    ] = None,
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
    split: SplitOpt = "test",
    task: TaskOpt = None,
    report: Annotated[
        Path | None, typer.Option(envvar=env("report"), help="Write the full report (JSON, CSV, PNG, HTML) here.")
    ] = None,
    fmt: Annotated[
        str, typer.Option("--format", "-f", envvar=env("format"), help="table or json (the metrics.json content).")
    ] = "table",
    recall_k: Annotated[
        str, typer.Option("--recall-k", envvar=env("recall_k"), help="With --task retrieval: the K of recall@K.")
    ] = "1,5,10",
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
    engine: EngineOpt = "local",
    ray_address: RayAddressOpt = None,
    actors: ActorsOpt = None,
    gpus_per_actor: GpusPerActorOpt = None,
    cpus_per_actor: CpusPerActorOpt = None,
) -> None:
    """Zero-shot accuracy of a model on a labelled data set, with confusion and per-class reports.

    Several data sets and/or models run every pair (each model loaded once); with --report DIR the grid writes
    results.jsonl/results.csv, leaderboard.html and a report per pair, and a rerun fills in only what is missing."""
    choice("--format", fmt, ("table", "json"))
    check_backend(backend)
    choice("--task", task, ("classification", "retrieval"))
    read = read_options(batch_size, workers, store, exact_preprocess, max_pixels, file_timeout)
    read.update(engine_options(engine, ray_address, actors, gpus_per_actor, cpus_per_actor))
    from ..grid import GridOptions, read_lines, retrieval_data, task_of

    models = [*(models or []), *(read_lines(models_file, "models") if models_file else [])] or [DEFAULT_MODEL]
    datasets = [*(datasets or []), *(read_lines(datasets_file, "datasets") if datasets_file else [])]
    if not datasets:
        raise UsageError("no data set given: name one (eval cifar10) or give --datasets FILE")
    if report:
        from ..output import check_output_dir

        check_output_dir(report, "--report")
    if len(models) * len(datasets) > 1 or models_file or datasets_file:
        if limit is not None and limit < 1:
            raise UsageError(f"--limit {limit}: must be at least 1")
        root_dir = str(root) if root else None
        options = GridOptions(
            templates=templates, task=task, root=root_dir, classnames=classnames, limit=limit,
            exact=exact_preprocess, recall_k=recall_k, split=split,
        )  # fmt: skip
        return _grid(models, datasets, options, report, fmt, device, precision, backend, read, quiet)
    model, dataset = models[0], datasets[0]
    if task_of(dataset, task, str(root) if root else None, split) == "retrieval":
        data, ks = retrieval_data(dataset, recall_k, root=str(root) if root else None, split=split)
        if task is None and not dataset.startswith(("wds:", "wds/")) and not quiet:
            progress.log(f"note: {data.source} holds captions (filepath,caption): scored for retrieval "
                         "(--task classification scores class folders instead)")  # fmt: skip
        from ..cache import Cache
        from ..models import load_model

        cache = Cache()
        clip = with_backend(load_model(model, device=device, precision=precision, cache=cache), backend, cache, quiet)
        return eval_retrieval(data, ks, clip, report, fmt, quiet, cache=cache, **read)
    data = eval_data(dataset, root, classnames, limit, split, task)

    from ..cache import Cache
    from ..evaluate import resolve_dataset_templates, score
    from ..models import load_model
    from ..report import summary_dict, write_report

    show = progress.enabled(quiet)
    cache = Cache()
    clip = with_backend(load_model(model, device=device, precision=precision, cache=cache), backend, cache, quiet)
    if not quiet:
        for note in data.notes:
            progress.log(f"note: {note}")
    clf = build_with_progress(
        clip, data.classnames, resolve_dataset_templates(templates, data, clip), cache, show, quiet
    )
    result = score(embed_with_progress(clip, data, show, quiet, **read), clf)
    if report:
        summary = write_report(result, report, clip.spec, clip.fingerprint)
    else:
        summary = summary_dict(result, clip.spec, clip.fingerprint)
    if fmt == "json":
        echo(json.dumps(summary, indent=2))
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


def _grid(models, datasets, options, report, fmt, device, precision, backend, read, quiet) -> None:
    from ..grid import summarise
    from ..leaderboard import board, run_grid_report, short

    def started(row: dict) -> None:
        if not quiet:
            state = "failed" if row["error"] else f"done in {row['seconds']:.1f} s"
            progress.log(f"{row['model']} x {row['dataset']}: {state}")

    rows = run_grid_report(
        models,
        datasets,
        options,
        report=report,
        device=device,
        precision=precision,
        backend=backend,
        read=read,
        on_row=started,
    )
    if fmt == "json":
        echo(json.dumps(rows, indent=2, ensure_ascii=False))
    else:
        b = board(rows)
        heads = [d if b.metric_of[d] == b.metric else f"{d} ({short(b.metric_of[d])})" for d in b.datasets]
        body = []
        for m in b.models:
            avg = b.mean(m)
            body.append([m, *(b.shown(m, d) for d in b.datasets), "" if avg is None else f"{avg:.2%}"])
        title = f"{short(b.metric)} · {plural(len(b.models), 'model')} x {plural(len(b.datasets), 'data set')}"
        print_table(title, ["model", *heads, b.mean_label()], body)
    if not quiet:
        summarise(rows)
        if report:
            progress.log(f"grid written to {report} (open {report / 'leaderboard.html'})")
    failed = sum(1 for r in rows if r["error"])
    if failed:
        raise ZsclipError(f"{failed} of {plural(len(rows), 'pair')} failed (listed above and in the results)")


def eval_retrieval(data, ks: list[int], clip, report: Path | None, fmt: str, quiet: bool, **options) -> None:
    """The rest of `zsclip eval --task retrieval` once eval_cmd has loaded the model: `options` are eval's
    reading options (batch_size, workers, store, exact, max_pixels, file_timeout)."""
    from ..retrieval_eval import evaluate_retrieval, summary_dict
    from ..retrieval_report import write_retrieval_report

    with progress.bar("encoding images", len(data.images), "img", progress.enabled(quiet)) as bar:
        result = evaluate_retrieval(
            clip, data, ks, on_batch=lambda d, s: bar and bar.update(0, advance=d + s), **options
        )
    if report:
        summary = write_retrieval_report(result, report, clip.spec, clip.fingerprint)
    else:
        summary = summary_dict(result, clip.spec, clip.fingerprint)
    if fmt == "json":
        echo(json.dumps(summary, indent=2))
    else:
        m = summary["metrics"]
        print_table(
            f"{summary['dataset']}: {plural(summary['images'], 'image')}, {plural(summary['captions'], 'caption')}",
            ["", "text → image", "image → text"],
            [
                [f"R@{k}", f"{m[f'image_retrieval_recall@{k}']:.2%}", f"{m[f'text_retrieval_recall@{k}']:.2%}"]
                for k in ks
            ],
        )
    for path, reason in result.skipped if not quiet else []:
        progress.log(f"skipped {path}: {reason}")
    if report and not quiet:
        progress.log(f"report written to {report} (open {report / 'report.html'})")
