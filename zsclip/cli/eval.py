"""`zsclip eval`: zero-shot accuracy (or retrieval recall) on a data set, with reports; several data sets or
models run a grid."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from zsclip.classify.recheck import Recheck
from zsclip.cli.common import (
    build_with_progress,
    choice,
    echo,
    engine_options,
    fitted_classifier,
    model_for_classifier,
    print_table,
    read_options,
)
from zsclip.cli.dataset_options import Data, embed_with_progress, eval_data, load_for_eval
from zsclip.cli.fit import parse_shots, shot_curve_cmd
from zsclip.cli.options import (
    INPUT,
    MODEL,
    OUTPUT,
    Backend,
    ClassifierOpt,
    Cluster,
    Device,
    Limits,
    Options,
    Quiet,
    Speed,
    Store,
    grouped,
    option,
)
from zsclip.core import progress
from zsclip.core.defaults import DEFAULT_MODEL
from zsclip.core.errors import UsageError, ZsclipError
from zsclip.core.paths import check_output_dir
from zsclip.core.wording import plural
from zsclip.evaluate.grid import GridOptions, read_lines, retrieval_data, summarise, task_of
from zsclip.evaluate.leaderboard import board, run_grid_report, short
from zsclip.evaluate.recall import evaluate_retrieval, summary_dict
from zsclip.evaluate.recall_report import write_retrieval_report
from zsclip.evaluate.report import write_report
from zsclip.evaluate.run import resolve_dataset_templates, score, summary
from zsclip.fewshot import METHODS, shots_among

DatasetArg = Annotated[
    list[str] | None,
    typer.Argument(
        help="imagenet-v2 (also imagenet-v2/threshold-0.7 and imagenet-v2/top-images), cifar10, cifar100, "
        "a folder of class folders, csv:FILE, a captions CSV, or CLIP_benchmark's webdataset data sets: wds:DIR "
        "(a local copy) or wds/NAME (wds/cifar10, wds/vtab/flowers: downloaded from the Hugging Face hub on first "
        "use). Several data sets (or several --model) run a grid.",
        show_default=False,
    ),
]


@dataclass
class Report(Options):
    report: Annotated[Path | None, option(panel=OUTPUT, help="Write the full report (JSON, CSV, PNG, HTML) here.")] = (
        None
    )
    fmt: Annotated[str, option("--format", "-f", panel=OUTPUT, help="table or json (the metrics.json content).")] = (
        "table"
    )


@dataclass
class FewShot(Options):
    """`--shots`: the few-shot curve (zsclip.fewshot) instead of zero-shot alone."""

    shots: Annotated[
        str | None,
        option(
            panel=MODEL,
            show_default=False,
            help="Few-shot curve: images per class to fit on, e.g. 1,2,4,8,16 (zero-shot is the first point; "
            "each K scored on the images not drawn).",
        ),
    ] = None
    method: Annotated[
        str,
        option(
            panel=MODEL,
            help="With --shots: linear-probe, tip-adapter or prototype, or several (comma-separated, or all): one "
            "curve each.",
        ),
    ] = "linear-probe"
    seeds: Annotated[int, option(panel=MODEL, help="With --shots: draws per K (their spread is shown).")] = 3

    def check(self, classifier_file, grid: bool, task) -> None:
        if not (self.shots or classifier_file):
            if self.method != "linear-probe":
                raise UsageError(f"--method {self.method}: a few-shot method is for --shots (the curve)")
            return
        self.methods()
        if self.shots and classifier_file:
            raise UsageError("--shots fits classifiers of its own: leave out --classifier")
        if grid:
            raise UsageError("--shots and --classifier score one model on one data set (not a grid)")
        if task == "retrieval":
            raise UsageError("--shots and --classifier are for classification, not --task retrieval")
        if self.seeds < 1:
            raise UsageError(f"--seeds {self.seeds}: must be at least 1")

    def methods(self) -> list[str]:

        if self.method.strip() == "all":
            return list(METHODS)
        names = [m.strip() for m in self.method.split(",") if m.strip()]
        for name in names or [self.method]:
            choice("--method", name, METHODS)
        return list(dict.fromkeys(names))


@grouped
def eval_cmd(
    datasets: DatasetArg = None,
    models: Annotated[
        list[str] | None,
        option(
            "--model",
            "-m",
            panel=MODEL,
            show_default=False,
            help="Model spec (repeat for a grid): ARCH:TAG, ARCH:/path/weights.pt, hf-hub:org/repo, a model "
            f"directory or a shipped model name. (default: {DEFAULT_MODEL}).",
        ),
    ] = None,
    models_file: Annotated[
        Path | None, option("--models", panel=MODEL, help="Model specs, one per line (a grid).")
    ] = None,
    datasets_file: Annotated[
        Path | None, option("--datasets", panel=INPUT, help="Data sets, one per line (a grid).")
    ] = None,
    templates: Annotated[
        str,
        option(
            "--templates",
            "-t",
            panel=MODEL,
            help="Template set or file; 'default' = the data set's own set, else the model's, else imagenet80.",
        ),
    ] = "default",
    task: Annotated[
        str | None,
        option(
            panel=INPUT,
            show_default=False,
            help="classification or retrieval (default: the data set's own: a wds set's dataset_type.txt, a "
            "captions CSV).",
        ),
    ] = None,
    recall_k: Annotated[
        str, option("--recall-k", panel=INPUT, help="With --task retrieval: the K of recall@K.")
    ] = "1,5,10",
    classifier_file: ClassifierOpt = None,
    *,
    fewshot: FewShot,
    data: Data,
    out: Report,
    limits: Limits,
    device: Device,
    backend: Backend,
    speed: Speed,
    store: Store,
    quiet: Quiet,
    cluster: Cluster,
) -> None:
    """Zero-shot accuracy of a model on a labelled data set, with confusion and per-class reports.

    Several data sets and/or models run every pair (each model loaded once); with --report DIR the grid writes
    results.jsonl/results.csv, leaderboard.html and a report per pair, and a rerun fills in only what is missing."""

    choice("--format", out.fmt, ("table", "json"))
    backend.check()
    choice("--task", task, ("classification", "retrieval"))
    read, runtime = read_options(speed, limits, store), engine_options(cluster)
    models_given = [*(models or []), *(read_lines(models_file, "models") if models_file else [])]
    models = models_given or [DEFAULT_MODEL]
    datasets = [*(datasets or []), *(read_lines(datasets_file, "datasets") if datasets_file else [])]
    if not datasets:
        raise UsageError("no data set given: name one (eval cifar10) or give --datasets FILE")
    if out.report:
        check_output_dir(out.report, "--report")
    data.check()  # a grid reads its data sets later, past eval_data
    grid = len(models) * len(datasets) > 1 or models_file or datasets_file
    fewshot.check(classifier_file, bool(grid), task)
    if grid:
        options = _grid_options(templates, task, recall_k, data, speed)
        return _grid(models, datasets, options, out, device, backend, read, runtime, quiet.quiet)
    if fewshot.shots or classifier_file:
        models = [model_for_classifier(models_given[0] if models_given else None, classifier_file)]
        return _fitted(
            models[0],
            datasets[0],
            templates,
            classifier_file,
            fewshot,
            data,
            out,
            device,
            backend,
            (read, runtime),
            quiet,
        )
    _single(models[0], datasets[0], templates, task, recall_k, data, out, device, backend, (read, runtime), quiet.quiet)


def _fitted(
    spec, dataset, templates, classifier_file, fewshot: FewShot, data, out, device, backend, reading, quiet
) -> None:
    """eval --shots (the curve) or eval --classifier FILE (a fitted classifier scored like zero-shot)."""

    shots = parse_shots(fewshot.shots) if fewshot.shots else None
    loaded = eval_data(dataset, data, "classification")
    clip, cache = load_for_eval(spec, device, backend, quiet.quiet)
    if shots:
        curve = (shots, fewshot.methods(), fewshot.seeds)
        return shot_curve_cmd(clip, cache, loaded, templates, curve, out, quiet.quiet, *reading)
    clf = fitted_classifier(classifier_file, clip, quiet.quiet)
    if list(clf.classnames) != list(loaded.classnames):
        raise UsageError(
            f"--classifier {classifier_file}: its classes ({', '.join(clf.classnames[:4])}, ...) are not "
            f"{loaded.name}'s ({', '.join(loaded.classnames[:4])}, ...) in the same order"
        )

    fitted = clf.head.meta
    among = shots_among(fitted, (path for path, _ in loaded.items))
    if among:  # the report and metrics.json say it too: an accuracy partly on the fitting images
        loaded.notes.append(f"{among} of the scored images are shots the classifier was fitted on")
    if not quiet.quiet and among:
        progress.log(
            f"note: {plural(among, 'image')} scored here {'is' if among == 1 else 'are'} among the shots "
            f"{classifier_file} was fitted on; its held-out top-1 (the images not drawn) was "
            f"{fitted.get('held_out_acc1') or 0.0:.2%}"
        )
    _classification(clip, cache, loaded, templates, out, quiet.quiet, reading, clf=clf)


def _single(spec, dataset, templates, task, recall_k, data: Data, out: Report, device, backend, reading, quiet: bool):

    if task_of(dataset, task, data.root_dir(), data.split) == "retrieval":
        captions, ks = retrieval_data(dataset, recall_k, root=data.root_dir(), split=data.split)
        if task is None and not dataset.startswith(("wds:", "wds/")) and not quiet:
            progress.log(
                f"note: {captions.source} holds captions (filepath,caption): scored for retrieval "
                "(--task classification scores class folders instead)"
            )
        clip, cache = load_for_eval(spec, device, backend, quiet)
        return eval_retrieval(captions, ks, clip, out.report, out.fmt, quiet, reading[0].but(cache=cache), reading[1])
    loaded = eval_data(dataset, data, task)
    clip, cache = load_for_eval(spec, device, backend, quiet)
    _classification(clip, cache, loaded, templates, out, quiet, reading)


def _classification(clip, cache, data, templates, out: Report, quiet: bool, reading, clf=None) -> None:
    read, runtime = reading

    show = progress.enabled(quiet)
    for note in data.notes if not quiet else []:
        progress.log(f"note: {note}")
    clf = clf or build_with_progress(
        clip, data.classnames, resolve_dataset_templates(templates, data, clip), cache, show, quiet
    )
    result = score(embed_with_progress(clip, data, show, quiet, read, runtime), clf, recheck=Recheck(clip, clf, read))
    summary_ = write_report(result, out.report, clip) if out.report else summary(result, clip)
    if out.fmt == "json":
        echo(json.dumps(summary_, indent=2))
    else:
        print_table(
            f"{summary_['dataset']} · {summary_['model']}",
            ["images", "classes", "templates", *summary_["metrics"]],
            [
                [
                    str(summary_["images"]),
                    str(summary_["num_classes"]),
                    f"{summary_['templates']} ({summary_['num_templates']})",
                    *(f"{v:.2%}" for v in summary_["metrics"].values()),
                ]
            ],
        )
    if not quiet and result.skipped:
        progress.log(f"skipped {plural(len(result.skipped), 'unreadable file')} (not counted)")
    if not quiet and out.report:
        progress.log(f"report written to {out.report} (open {out.report / 'report.html'})")


def _grid_options(templates: str, task: str | None, recall_k: str, data: Data, speed: Speed):

    return GridOptions(
        templates=templates,
        task=task,
        root=data.root_dir(),
        classnames=data.classnames,
        limit=data.limit,
        exact=speed.exact_preprocess,
        recall_k=recall_k,
        split=data.split,
    )


def _grid(models, datasets, options, out: Report, device, backend, read, runtime, quiet: bool) -> None:

    def started(row: dict) -> None:
        if not quiet:
            state = "failed" if row["error"] else f"done in {row['seconds']:.1f} s"
            progress.log(f"{row['model']} x {row['dataset']}: {state}")

    rows = run_grid_report(
        models,
        datasets,
        options,
        report=out.report,
        device=device.device,
        precision=device.precision,
        backend=backend.backend,
        read=read,
        runtime=runtime,
        on_row=started,
    )
    if out.fmt == "json":
        echo(json.dumps(rows, indent=2, ensure_ascii=False))
    else:
        b = board(rows)
        heads = [d if b.metric_of[d] == b.metric else f"{d} ({short(b.metric_of[d])})" for d in b.datasets]
        body = [
            [m, *(b.shown(m, d) for d in b.datasets), "" if b.mean(m) is None else f"{b.mean(m):.2%}"] for m in b.models
        ]
        title = f"{short(b.metric)} · {plural(len(b.models), 'model')} x {plural(len(b.datasets), 'data set')}"
        print_table(title, ["model", *heads, b.mean_label()], body)
    if not quiet:
        summarise(rows)
        if out.report:
            progress.log(f"grid written to {out.report} (open {out.report / 'leaderboard.html'})")
    failed = sum(1 for r in rows if r["error"])
    if failed:
        raise ZsclipError(f"{failed} of {plural(len(rows), 'pair')} failed (listed above and in the results)")


def eval_retrieval(data, ks: list[int], clip, report: Path | None, fmt: str, quiet: bool, read, runtime) -> None:
    """The rest of `zsclip eval --task retrieval` once the model is loaded."""

    with progress.bar("encoding images", len(data.images), "img", progress.enabled(quiet)) as bar:
        result = evaluate_retrieval(
            clip, data, ks, read, runtime, on_batch=lambda d, s: bar and bar.update(0, advance=d + s)
        )
    summary = write_retrieval_report(result, report, clip) if report else summary_dict(result, clip)
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
