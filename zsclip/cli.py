"""The `zsclip` command: parse options, call the Python API, render. No logic of its own."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Annotated

import click
import typer
from rich.console import Console
from typer.core import TyperGroup

from . import __version__, atomic, progress
from .cache import Cache, cache_dir
from .classify import Skipped, check_options, classify
from .errors import UsageError, ZsclipError, is_disk_full
from .images import (
    DEFAULT_FILE_TIMEOUT,
    DEFAULT_MAX_PIXELS,
    check_limits,
    count_candidates,
    expand_sources,
    first_image,
)
from .models import DEFAULT_MODEL, PRECISIONS, fingerprint_spec, list_models, load_model
from .output import FORMATS, OutputFile, format_for_path, make_writer
from .prompts import parse_classes, read_classes_file
from .text import build_classifier

# Typer >= 0.29 vendors its own click; older releases raise click's exceptions.
_CLICK_ERRORS = (click.ClickException, click.exceptions.Abort, getattr(typer, "TyperException", click.ClickException))


class _Group(TyperGroup):
    """Every error a user can cause ends as one line on stderr and an exit code; never a traceback."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _CLICK_ERRORS as exc:
            if not hasattr(exc, "format_message"):  # Abort
                _fail("aborted", 130)
            code = getattr(exc, "exit_code", 1)
            ctx = getattr(exc, "ctx", None)
            where = f" (see '{ctx.command_path} --help')" if code == 2 and ctx else ""
            _fail(f"{exc.format_message()}{where}", code)
        except ZsclipError as exc:
            _fail(str(exc), exc.exit_code)
        except MemoryError:
            _fail("out of memory: try a smaller --batch-size or fewer --workers (finished output is kept)", 1)
        except RuntimeError as exc:  # torch.OutOfMemoryError (CUDA) and CPU allocator failures
            if "out of memory" not in str(exc).lower():
                raise
            first = str(exc).splitlines()[0][:200]
            _fail(f"out of memory ({first}): try a smaller --batch-size (finished output is kept)", 1)
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        sys.exit(rv if isinstance(rv, int) else 0)


def _fail(message: str, code: int) -> None:
    progress.log(f"error: {message}")
    sys.exit(code)


app = typer.Typer(
    cls=_Group,
    help="Zero-shot image classification with CLIP: label images by class names the model never trained on.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
cache_app = typer.Typer(
    cls=_Group, help="Inspect or clear the cache of text and image embeddings.", no_args_is_help=True
)
app.add_typer(cache_app, name="cache")
data_app = typer.Typer(cls=_Group, help="Generate data sets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
prompts_app = typer.Typer(cls=_Group, help="List, show and compare prompt template sets.", no_args_is_help=True)
app.add_typer(prompts_app, name="prompts")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"zsclip {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    pass


def _env(name: str) -> str:
    return f"ZSCLIP_{name.upper().replace('-', '_')}"


ModelOpt = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        envvar=_env("model"),
        help="Model spec: ARCH:TAG, ARCH:/path/weights.pt, hf-hub:org/repo, local-dir:/path, a model directory, "
        "or a shipped model name.",
    ),
]


RootOpt = Annotated[
    Path | None,
    typer.Option(envvar=_env("root"), help="An existing copy of a named data set (no download)."),
]
ClassnamesOpt = Annotated[
    str | None,
    typer.Option(
        envvar=_env("classnames"),
        help="Class names for a folder or csv: data set: imagenet, cifar10, cifar100, shapes, or a file.",
    ),
]
LimitOpt = Annotated[
    int | None, typer.Option(envvar=_env("limit"), help="Score a stratified subset of N images.", show_default=False)
]
BatchOpt = Annotated[
    int | None,
    typer.Option(
        envvar=_env("batch_size"), help="Images per forward pass (default: 256 on CUDA, else 32).", show_default=False
    ),
]
WorkersOpt = Annotated[
    int | None,
    typer.Option(envvar=_env("workers"), help="Decoding processes (default: cores - 1).", show_default=False),
]
DeviceOpt = Annotated[str, typer.Option(envvar=_env("device"), help="auto, cpu, cuda, cuda:N or mps.")]
PrecisionOpt = Annotated[
    str | None,
    typer.Option(
        envvar=_env("precision"),
        help=f"{', '.join(PRECISIONS)} (default: bf16 autocast on CUDA, else fp32).",
        show_default=False,
    ),
]
StoreOpt = Annotated[
    bool,
    typer.Option(
        "--store/--no-store",
        envvar=_env("store"),
        help="Keep image embeddings in the cache and reuse them (another run with other classes encodes no image).",
    ),
]
ExactOpt = Annotated[
    bool,
    typer.Option(
        "--exact-preprocess",
        envvar=_env("exact_preprocess"),
        help="Decode JPEGs at full size (default: large JPEGs are decoded at a reduced scale, >= 2x the input).",
    ),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", envvar=_env("quiet"), help="No progress bar.")]
MaxPixelsOpt = Annotated[
    int,
    typer.Option(
        envvar=_env("max_pixels"),
        help="Skip images with more pixels than this, from the header (decompression bombs).",
    ),
]
FileTimeoutOpt = Annotated[
    float,
    typer.Option(
        envvar=_env("file_timeout"),
        help="Skip a file that takes longer than this many seconds to read and decode (a hung mount, a bad file).",
    ),
]


@app.command("classify")
def classify_cmd(
    paths: Annotated[
        list[str], typer.Argument(help="Image files, folders, or @list.txt files of paths.", show_default=False)
    ],
    classes: Annotated[
        str | None,
        typer.Option("--classes", "-c", envvar=_env("classes"), help="Comma-separated class names."),
    ] = None,
    classes_file: Annotated[
        Path | None,
        typer.Option(envvar=_env("classes_file"), help="Class names, one per line, or a classes.tsv/CSV table."),
    ] = None,
    model: ModelOpt = DEFAULT_MODEL,
    templates: Annotated[
        str,
        typer.Option(
            "--templates",
            "-t",
            envvar=_env("templates"),
            help="Template set name (zsclip prompts list), a file with one template per line, or 'default'.",
        ),
    ] = "default",
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            "-f",
            envvar=_env("format"),
            help=f"Output format: {', '.join(FORMATS)} "
            "(default: by --output's extension, else table on a terminal, else jsonl).",
            show_default=False,
        ),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", envvar=_env("output"), help="Write results to FILE.")
    ] = None,
    top_k: Annotated[
        int | None,
        typer.Option(
            envvar=_env("top_k"), help="Classes listed per image (default: 3, or fewer classes).", show_default=False
        ),
    ] = None,
    threshold: Annotated[
        float | None,
        typer.Option(envvar=_env("threshold"), help="Label 'unknown' when the top probability is below P."),
    ] = None,
    recursive: Annotated[
        bool, typer.Option("--recursive/--no-recursive", envvar=_env("recursive"), help="Walk into subfolders.")
    ] = True,
    batch_size: BatchOpt = None,
    workers: WorkersOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = None,
    store: StoreOpt = True,
    exact_preprocess: ExactOpt = False,
    max_pixels: MaxPixelsOpt = DEFAULT_MAX_PIXELS,
    file_timeout: FileTimeoutOpt = DEFAULT_FILE_TIMEOUT,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            envvar=_env("resume"),
            help="Continue an interrupted run: keep the records in OUTPUT.partial and classify only the rest.",
        ),
    ] = False,
    failures: Annotated[
        Path | None,
        typer.Option(envvar=_env("failures"), help="Write skipped files and reasons to FILE (JSONL)."),
    ] = None,
    strict: Annotated[
        bool, typer.Option("--strict", envvar=_env("strict"), help="Fail the run (exit 1) on the first bad file.")
    ] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", envvar=_env("quiet"), help="No progress bar, no summary.")
    ] = False,
) -> None:
    """Classify images by class names: a label, its probability and the top-k classes per image.

    With --output, results are written as they come to OUTPUT.partial, which becomes OUTPUT when the run ends;
    after a crash or kill, the same command with --resume continues where it stopped."""
    names = _class_names(classes, classes_file)
    if fmt is not None and fmt not in FORMATS:
        raise UsageError(f"--format {fmt}: use one of {', '.join(FORMATS)}")
    if resume and output is None:
        raise UsageError("--resume needs --output FILE (the run to continue)")
    if failures is not None and output is not None and failures.resolve() == output.resolve():
        raise UsageError(f"--failures and --output are both {output}: give them different files")
    check_limits(batch_size, workers, max_pixels, file_timeout)
    sources = expand_sources(paths)
    if first_image(sources, recursive) is None:
        raise UsageError(f"no images found under {', '.join(paths)} (looked for {_extensions()})")
    fmt = fmt or (format_for_path(str(output)) if output else None) or ("table" if sys.stdout.isatty() else "jsonl")
    if output is not None and OutputFile.preflight(output, fmt, resume):
        progress.log(f"{output} is complete already (no {output}.partial to resume); nothing to do")
        return
    show = progress.enabled(quiet)
    cache = Cache()
    clip = load_model(model, device=device, precision=precision, cache=cache)
    clf = _build(clip, names, templates, cache, show)
    k = check_options(clf, top_k, threshold)
    if top_k is not None and top_k > k:
        progress.log(f"note: --top-k {top_k} is more than the {k} classes; listing {k}")
    settings = {
        "format": fmt,
        "model": clip.fingerprint,
        "classes": clf.classnames,
        "templates": clf.templates.templates,
        "top_k": k,
        "threshold": threshold,
        "exact_preprocess": exact_preprocess,
    }

    with contextlib.ExitStack() as stack:
        out_file = OutputFile(output, fmt, settings, resume) if output else None
        if out_file and out_file.done:
            progress.log(f"resuming {out_file.partial}: {len(out_file.done)} images already classified")
        out = out_file.stream if out_file else sys.stdout
        fail_log = (
            stack.enter_context(atomic.atomic_open(failures, "w", encoding="utf-8", keep_on_error=True))
            if failures
            else None
        )  # a failed run still lists the files it skipped
        writer = make_writer(fmt, out, k, header=not (out_file and out_file.appending))
        bar = stack.enter_context(progress.bar("classifying", None, "img", show))
        if bar:
            threading.Thread(
                target=lambda: bar.update(0, total=count_candidates(sources, recursive)), daemon=True
            ).start()
        done = skipped = 0
        try:
            for record in classify(
                clip, clf, sources, top_k=k, threshold=threshold, batch_size=batch_size, workers=workers,
                recursive=recursive, store=store, exact=exact_preprocess, max_pixels=max_pixels,
                file_timeout=file_timeout, exclude=out_file.done if out_file else (),
            ):  # fmt: skip
                if isinstance(record, Skipped):
                    skipped += 1
                    if not quiet:
                        progress.log(f"skipped {record.path}: {record.reason}")
                    if fail_log:
                        fail_log.write(json.dumps(record.to_dict(), ensure_ascii=False) + "\n")
                        fail_log.flush()
                    if strict:
                        raise ZsclipError(f"{record.path}: {record.reason} (--strict stops at the first bad file)")
                else:
                    done += 1
                    writer.write(record)
                    if out_file:
                        out_file.tick()
                if bar:
                    bar.update(0, advance=1, extra=f"{skipped} skipped" if skipped else "")
            writer.close()
            if done + (len(out_file.done) if out_file else 0) == 0:
                raise ZsclipError(f"no image could be read: all {skipped} files were skipped")
        except BaseException as exc:
            if out_file:
                out_file.abandon()
                if done or out_file.done:
                    progress.log(f"kept {len(out_file.done) + done} finished records in {out_file.partial} (--resume)")
                else:
                    out_file.discard()
            if isinstance(exc, OSError) and is_disk_full(exc):
                raise ZsclipError(f"{output or 'output'}: the disk is full ({exc}); free space, then --resume") from exc
            raise
        if out_file:
            out_file.finish()
    if not quiet:
        where = f" (listed in {failures})" if failures and skipped else ""
        resumed = f" ({len(out_file.done)} more from the interrupted run)" if out_file and out_file.done else ""
        msg = f"classified {done} images{resumed}" + (f", skipped {skipped} bad files{where}" if skipped else "")
        progress.log(msg + (f"; results in {output}" if output else ""))


def _class_names(classes: str | None, classes_file: Path | None) -> list[str]:
    if classes is not None and classes_file is not None:
        raise UsageError("give --classes or --classes-file, not both")
    if classes is not None:
        return parse_classes(classes)
    if classes_file is not None:
        return read_classes_file(classes_file)
    raise UsageError("no classes given: use --classes 'cat,dog' or --classes-file FILE")


def _extensions() -> str:
    from .images import IMAGE_EXTENSIONS

    return " ".join(sorted(IMAGE_EXTENSIONS))


def _build(clip, names, templates, cache, show):
    """Build the classifier; a progress bar appears only if prompts actually need encoding."""
    with contextlib.ExitStack() as stack:
        bars = []

        def report(done: int, total: int) -> None:
            if show and not bars:
                bars.append(stack.enter_context(progress.bar("encoding prompts", total, "prompt", show)))
            if bars:
                bars[0].update(0, completed=done, total=total)

        return build_classifier(clip, names, templates, cache=cache, progress=report)


@app.command("models")
def models_cmd(
    downloaded: Annotated[bool, typer.Option("--downloaded", help="Only models whose weights are here.")] = False,
    fmt: Annotated[
        str | None, typer.Option("--format", "-f", help="table or jsonl (default: table on a terminal, else jsonl).")
    ] = None,
) -> None:
    """List open_clip pretrained models (and whether they are downloaded), shipped and local models."""
    rows = [r for r in list_models() if r["available"] or not downloaded]
    if (fmt or ("table" if sys.stdout.isatty() else "jsonl")) == "jsonl":
        for r in rows:
            typer.echo(json.dumps(r))
        return
    from rich.table import Table

    table = Table(show_edge=False, header_style="bold")
    for col in ("spec", "source", "available"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["spec"], r["source"], "yes" if r["available"] else "")
    Console(highlight=False).print(table)


def _eval_data(dataset: str, root: Path | None, classnames: str | None, limit: int | None):
    """The data set an eval-like command scores, checked before any model is loaded."""
    from .datasets import load_dataset

    if limit is not None and limit < 1:
        raise UsageError(f"--limit {limit}: must be at least 1")
    data = load_dataset(dataset, root=str(root) if root else None, classnames=classnames).limit(limit)
    if not data.items:
        raise UsageError(f"{dataset}: no images found")
    return data


def _embed_with_progress(clip, dataset, show, **options):
    from .evaluate import embed_dataset

    check_limits(options["batch_size"], options["workers"], options["max_pixels"], options["file_timeout"])
    with progress.bar("encoding images", len(dataset.items), "img", show) as bar:

        def tick(done: int, skipped: int) -> None:
            if bar:
                bar.update(0, advance=done + skipped, extra=f"{skipped} skipped" if skipped else "")

        embedded = embed_dataset(clip, dataset, on_batch=tick, **options)
    for path, reason in embedded.skipped:
        progress.log(f"skipped {path}: {reason}")
    if embedded.reused:
        progress.log(f"{embedded.reused} of {len(embedded.paths)} image embeddings came from the image store")
    return embedded


@app.command("eval")
def eval_cmd(
    dataset: Annotated[
        str, typer.Argument(help="imagenet-v2[/threshold-0.7|/top-images], cifar10, cifar100, a folder, or csv:FILE.")
    ],
    model: ModelOpt = DEFAULT_MODEL,
    templates: Annotated[
        str,
        typer.Option(
            "--templates",
            "-t",
            envvar=_env("templates"),
            help="Template set or file; 'default' = the data set's own set, else the model's, else imagenet80.",
        ),
    ] = "default",
    root: RootOpt = None,
    classnames: ClassnamesOpt = None,
    limit: LimitOpt = None,
    report: Annotated[
        Path | None, typer.Option(envvar=_env("report"), help="Write the full report (JSON, CSV, PNG, HTML) here.")
    ] = None,
    fmt: Annotated[
        str, typer.Option("--format", "-f", envvar=_env("format"), help="table or json (the metrics.json content).")
    ] = "table",
    batch_size: BatchOpt = None,
    workers: WorkersOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = None,
    store: StoreOpt = True,
    exact_preprocess: ExactOpt = False,
    max_pixels: MaxPixelsOpt = DEFAULT_MAX_PIXELS,
    file_timeout: FileTimeoutOpt = DEFAULT_FILE_TIMEOUT,
    quiet: QuietOpt = False,
) -> None:
    """Zero-shot accuracy of a model on a labelled data set, with confusion and per-class reports."""
    from .evaluate import resolve_dataset_templates, score
    from .report import summary_dict, write_report

    if fmt not in ("table", "json"):
        raise UsageError(f"--format {fmt}: use table or json")
    data = _eval_data(dataset, root, classnames, limit)
    show = progress.enabled(quiet)
    cache = Cache()
    clip = load_model(model, device=device, precision=precision, cache=cache)
    clf = _build(clip, data.classnames, resolve_dataset_templates(templates, data, clip), cache, show)
    embedded = _embed_with_progress(
        clip, data, show, batch_size=batch_size, workers=workers, store=store, exact=exact_preprocess,
        max_pixels=max_pixels, file_timeout=file_timeout,
    )  # fmt: skip
    result = score(embedded, clf)
    summary = (
        write_report(result, report, clip.spec, clip.fingerprint)
        if report
        else summary_dict(result, clip.spec, clip.fingerprint)
    )
    if fmt == "json":
        typer.echo(json.dumps(summary, indent=2))
    else:
        _summary_table(summary)
    if result.skipped:
        progress.log(f"skipped {len(result.skipped)} unreadable files (not counted)")
    if report:
        progress.log(f"report written to {report} (open {report / 'report.html'})")


def _summary_table(summary: dict) -> None:
    from rich.table import Table

    table = Table(show_edge=False, header_style="bold", title=f"{summary['dataset']} · {summary['model']}")
    for col in ("images", "classes", "templates", *summary["metrics"]):
        table.add_column(col, justify="right")
    table.add_row(
        str(summary["images"]),
        str(summary["num_classes"]),
        f"{summary['templates']} ({summary['num_templates']})",
        *(f"{v:.2%}" for v in summary["metrics"].values()),
    )
    Console(highlight=False).print(table)


@prompts_app.command("list")
def prompts_list() -> None:
    """The shipped template sets: name, size and description."""
    from .prompts import list_template_sets

    for s in list_template_sets():
        typer.echo(f"{s.name}\t{len(s.templates)}\t{s.description}")


@prompts_app.command("show")
def prompts_show(
    name: Annotated[str, typer.Argument(help="Template set name or file.")],
    classname: Annotated[str | None, typer.Option("--class", help="Expand the templates for this class.")] = None,
) -> None:
    """Print a template set, one template per line (expanded for --class)."""
    from .prompts import load_templates

    template_set = load_templates(name)
    for line in template_set.expand(classname) if classname else template_set.templates:
        typer.echo(line)


@prompts_app.command("compare")
def prompts_compare(
    dataset: Annotated[str, typer.Argument(help="Data set, as for zsclip eval.")] = "imagenet-v2",
    sets: Annotated[
        str | None, typer.Option(envvar=_env("sets"), help="Comma-separated template sets (default: all shipped).")
    ] = None,
    per_template: Annotated[
        bool, typer.Option("--per-template", help="Also score every single template and a greedy best subset.")
    ] = False,
    model: ModelOpt = DEFAULT_MODEL,
    root: RootOpt = None,
    classnames: ClassnamesOpt = None,
    limit: LimitOpt = None,
    report: Annotated[
        Path | None, typer.Option(envvar=_env("report"), help="Write compare.csv, compare.json, compare.png here.")
    ] = None,
    batch_size: BatchOpt = None,
    workers: WorkersOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = None,
    store: StoreOpt = True,
    exact_preprocess: ExactOpt = False,
    max_pixels: MaxPixelsOpt = DEFAULT_MAX_PIXELS,
    file_timeout: FileTimeoutOpt = DEFAULT_FILE_TIMEOUT,
    quiet: QuietOpt = False,
) -> None:
    """Score several template sets on one data set, encoding the images once; best first."""
    from rich.table import Table

    from .evaluate import compare_templates
    from .prompts import load_templates
    from .report import write_comparison

    names = [s.strip() for s in sets.split(",") if s.strip()] if sets else None
    for n in names or []:
        load_templates(n)
    data = _eval_data(dataset, root, classnames, limit)
    show = progress.enabled(quiet)
    clip = load_model(model, device=device, precision=precision)
    embedded = _embed_with_progress(
        clip, data, show, batch_size=batch_size, workers=workers, store=store, exact=exact_preprocess,
        max_pixels=max_pixels, file_timeout=file_timeout,
    )  # fmt: skip
    comparison = compare_templates(clip, embedded, names, per_template)
    table = Table(
        show_edge=False, header_style="bold", title=f"{data.name} · {clip.spec} · {len(embedded.paths)} images"
    )
    for col in ("template set", "templates", "acc1", "acc5", "mean per-class recall"):
        table.add_column(col, justify="left" if col == "template set" else "right")
    for r in comparison.rows:
        acc5 = f"{r['acc5']:.2%}" if "acc5" in r else "-"
        table.add_row(r["set"], str(r["templates"]), f"{r['acc1']:.2%}", acc5, f"{r['mean_per_class_recall']:.2%}")
    console = Console(highlight=False)
    console.print(table)
    if per_template:
        single = Table(show_edge=False, header_style="bold", title="single templates")
        single.add_column("template")
        single.add_column("acc1", justify="right")
        for r in comparison.per_template:
            single.add_row(r["template"], f"{r['acc1']:.2%}")
        console.print(single)
        greedy = Table(show_edge=False, header_style="bold", title="greedy subset (forward selection)")
        for col in ("step", "added template", "ensemble acc1"):
            greedy.add_column(col)
        for r in comparison.greedy:
            greedy.add_row(str(r["step"]), r["added"], f"{r['acc1']:.2%}")
        console.print(greedy)
    if report:
        context = {
            "model": clip.spec,
            "fingerprint": clip.fingerprint,
            "dataset": data.name,
            "images": len(embedded.paths),
            "skipped": len(embedded.skipped),
        }
        write_comparison(comparison, report, context)
        progress.log(f"comparison written to {report}")


@data_app.command("shapes")
def data_shapes(
    out: Annotated[Path, typer.Argument(help="Folder to write (images/, captions.csv, eval/).", show_default=False)],
    n: Annotated[int, typer.Option("--n", envvar=_env("n"), help="Training images.")] = 30_000,
    seed: Annotated[
        int, typer.Option(envvar=_env("seed"), help="Random seed; the same seed gives the same files.")
    ] = 0,
    size: Annotated[int, typer.Option(envvar=_env("size"), help="Image side in pixels.")] = 64,
    eval_per_class: Annotated[
        int, typer.Option(envvar=_env("eval_per_class"), help="Eval images per composition (36 compositions).")
    ] = 30,
) -> None:
    """Coloured shapes with varied captions; six colour-shape pairings never appear in any training caption."""
    from .shapes import HELD_OUT, write_dataset

    if n < 1 or size < 16 or eval_per_class < 0:
        raise UsageError("--n must be >= 1, --size >= 16 and --eval-per-class >= 0")
    start = time.perf_counter()
    counts = write_dataset(out, n=n, seed=seed, size=size, eval_per_class=eval_per_class)
    elapsed = time.perf_counter() - start
    held = ", ".join(sorted(f"{c} {s}" for c, s in HELD_OUT))
    typer.echo(json.dumps({**counts, "out": str(out), "held_out": held}))
    progress.log(f"wrote {counts['train_images'] + counts['eval_images']} images in {elapsed:.1f} s to {out}")


@app.command("train")
def train_cmd(
    data: Annotated[
        Path | None, typer.Argument(help="captions CSV (filepath,caption) or a folder holding captions.csv.")
    ] = None,
    config: Annotated[
        str | None,
        typer.Option(
            envvar=_env("config"),
            help="Model config: a JSON file in open_clip's model_cfg form, "
            "or a name (shapes-rn, tiny-vit, any open_clip architecture).",
        ),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", envvar=_env("output"), help="Model directory.")
    ] = None,
    resume: Annotated[
        Path | None, typer.Option(help="Continue the run in this directory from its last checkpoint.")
    ] = None,
    epochs: Annotated[int, typer.Option(envvar=_env("epochs"))] = 10,
    batch_size: Annotated[int, typer.Option(envvar=_env("batch_size"))] = 256,
    lr: Annotated[float, typer.Option(envvar=_env("lr"), help="Peak learning rate.")] = 1e-3,
    wd: Annotated[float, typer.Option(envvar=_env("wd"), help="AdamW weight decay (weight matrices only).")] = 0.1,
    warmup: Annotated[int, typer.Option(envvar=_env("warmup"), help="Linear warmup steps.")] = 200,
    device: Annotated[str, typer.Option(envvar=_env("device"))] = "auto",
    precision: Annotated[
        str, typer.Option(envvar=_env("precision"), help="auto (bf16 autocast on CUDA, else fp32), fp32, bf16.")
    ] = "auto",
    workers: Annotated[int, typer.Option(envvar=_env("workers"), help="Image decoding processes.")] = 0,
    seed: Annotated[int, typer.Option(envvar=_env("seed"))] = 0,
    eval_dir: Annotated[
        Path | None, typer.Option(envvar=_env("eval_dir"), help="ImageFolder eval split (default: DATA/eval).")
    ] = None,
    templates: Annotated[
        str, typer.Option("--templates", "-t", envvar=_env("templates"), help="Template set for eval; recommended.")
    ] = "photo",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", envvar=_env("quiet"))] = False,
) -> None:
    """Train a CLIP model contrastively on image-caption pairs (the CLIP recipe, small)."""
    from .prompts import load_templates
    from .train import TrainConfig, train

    if resume is not None:
        metrics = train(
            TrainConfig(data="", config="", output=str(resume)), resume=True, show_progress=progress.enabled(quiet)
        )
    else:
        if data is None or config is None or output is None:
            raise UsageError("give DATA, --config and --output (or --resume DIR)")
        if precision not in ("auto", "fp32", "bf16"):
            raise UsageError(f"--precision {precision}: use auto, fp32 or bf16")
        if epochs < 1 or batch_size < 2 or lr <= 0 or warmup < 0 or workers < 0:
            raise UsageError("--epochs >= 1, --batch-size >= 2, --lr > 0, --warmup >= 0 and --workers >= 0 are needed")
        load_templates(templates)
        cfg = TrainConfig(
            data=str(data),
            config=config,
            output=str(output),
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            wd=wd,
            warmup=warmup,
            device=device,
            precision=precision,
            workers=workers,
            seed=seed,
            eval_dir=str(eval_dir) if eval_dir else None,
            templates=templates,
        )
        metrics = train(cfg, show_progress=progress.enabled(quiet))
    typer.echo(json.dumps(metrics))


@cache_app.command("path")
def cache_path() -> None:
    """Print the cache directory ($ZSCLIP_CACHE_DIR overrides it)."""
    typer.echo(str(cache_dir()))


@cache_app.command("info")
def cache_info() -> None:
    """Cached text and image embeddings per model, and the cache's size on disk."""
    cache = Cache()
    entries = cache.info()
    typer.echo(f"cache: {cache.directory} ({_size(cache.size_bytes())} on disk)")
    for e in entries:
        typer.echo(
            f"{e.spec or '?'}\t{e.fingerprint}\t{e.text_vectors} text vectors\t{e.image_vectors} image vectors"
            f"\t{_size(e.bytes)}"
        )
    if not entries:
        typer.echo("no embeddings cached")


@cache_app.command("clear")
def cache_clear(model: Annotated[str | None, typer.Option("--model", "-m", help="Only this model's entries.")] = None):
    """Delete cached embeddings: all, or one model's."""
    cache = Cache()
    texts, images = cache.clear(fingerprint_spec(model, cache) if model else None)
    typer.echo(f"removed {texts} text vectors and {images} image vectors" + (f" of {model}" if model else ""))


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    app()
