"""`zsclip fit`: a few-shot classifier from K labelled images per class, saved as one file; and `eval --shots`,
the few-shot curve (zsclip.fewshot)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Annotated

import typer

from zsclip.classify.output import lock_path
from zsclip.classify.recheck import fp32_of
from zsclip.cli.common import build_with_progress, choice, echo, print_table, read_options
from zsclip.cli.dataset_options import Data, embed_with_progress, eval_data, load_for_eval
from zsclip.cli.options import (
    INPUT,
    MODEL,
    OUTPUT,
    Backend,
    Device,
    Limits,
    ModelOpt,
    Quiet,
    Speed,
    Store,
    grouped,
    option,
)
from zsclip.core import progress
from zsclip.core.defaults import DEFAULT_MODEL
from zsclip.core.errors import UsageError
from zsclip.core.locks import Lock
from zsclip.core.paths import check_output_file
from zsclip.core.wording import plural
from zsclip.evaluate.run import resolve_dataset_templates
from zsclip.fewshot import METHODS, draw_shots, fit_embedded, save, shot_curve
from zsclip.fewshot.files import check_replaceable
from zsclip.fewshot.report import write_curve

CURVE_LOCK = ".zsclip-curve.lock"  # one eval --shots at a time writes a --report folder (zsclip.core.locks)
METHOD_HELP = "linear-probe (logistic regression), tip-adapter (training-free cache) or prototype (class means)."


@grouped
def fit_cmd(
    dataset: Annotated[
        str,
        typer.Argument(
            help="A data set eval reads: a folder of class folders, csv:FILE, wds:DIR, a named set.",
            show_default=False,
        ),
    ],
    output: Annotated[
        Path, option("--output", "-o", panel=OUTPUT, help="The classifier file to write (.safetensors).")
    ],
    spec: ModelOpt = DEFAULT_MODEL,
    shots: Annotated[int, option(panel=INPUT, help="Labelled images per class to fit on; the rest are held out.")] = 16,
    method: Annotated[str, option(panel=MODEL, help=METHOD_HELP)] = "linear-probe",
    seed: Annotated[int, option(panel=INPUT, help="Which images are drawn as shots.")] = 0,
    strict_shots: Annotated[
        bool,
        option(
            "--strict-shots",
            panel=INPUT,
            help="Refuse a class with K images or fewer (default: use what it has, saying which).",
        ),
    ] = False,
    templates: Annotated[
        str, option("--templates", "-t", panel=MODEL, help="Template set of the zero-shot part (as in eval).")
    ] = "default",
    *,
    data: Data,
    limits: Limits,
    device: Device,
    backend: Backend,
    speed: Speed,
    store: Store,
    quiet: Quiet,
) -> None:
    """Fit a few-shot classifier: K images per class of DATA (drawn with --seed), the rest held out and scored.

    Writes one file (the head's arrays and its metadata: model, classes, templates, method, shots, seed,
    hyper-parameters, held-out accuracy) that classify, eval, search and serve take with --classifier FILE.
    Prints the fit as JSON."""

    choice("--method", method, METHODS)
    if shots < 1:
        raise UsageError(f"--shots {shots}: must be at least 1")
    if not 0 <= seed < 2**32:
        raise UsageError(f"--seed {seed}: use a number from 0 to {2**32 - 1}")
    output = check_output_file(output, "--output")
    check_replaceable(output)
    # Two fits writing one file: the second is refused at once (each would say it wrote FILE; one would be wrong).
    with Lock(lock_path(output), f"--output {output}"):
        backend.check()
        read = read_options(speed, limits, store)
        loaded = eval_data(dataset, data)
        clip, cache = load_for_eval(spec, device, backend, quiet.quiet)
        show = progress.enabled(quiet.quiet)
        clf = _text_classifier(clip, cache, loaded, templates, show, quiet.quiet)
        # A head fits fp32 features: an int8 image tower's fp32 twin encodes them.
        embedded = embed_with_progress(fp32_of(clip), loaded, show, quiet.quiet, read)
        result = fit_embedded(embedded, clf, shots, method, seed, strict=strict_shots)
        save(output, result.head, {**result.meta(clip, loaded.name), "method": method})
        record = {
            "classifier": str(output),
            "method": method,
            "shots": shots,
            "seed": seed,
            "classes": len(clf),
            "fitted_on": len(result.train),
            "held_out": len(result.held_out),
            "held_out_acc1": result.acc1,
            "zero_shot_acc1": result.zero_shot_acc1,
            "params": result.head.params,
            "fit_seconds": round(result.seconds, 3),
            "short_classes": result.short,
            "skipped": len(embedded.skipped),
        }
        echo(json.dumps(record))
        if not quiet.quiet:
            if result.short:
                progress.log(f"{_short_note(result.short, shots)}; --strict-shots refuses them")
            acc = "no image left to score" if result.acc1 is None else f"held-out top-1 {result.acc1:.2%}"
            zero = "" if result.zero_shot_acc1 is None else f" (zero-shot {result.zero_shot_acc1:.2%})"
            progress.log(f"wrote {output}: {method}, {shots} shots per class, {acc}{zero}")
            if embedded.skipped:
                progress.log(f"skipped {plural(len(embedded.skipped), 'unreadable file')} (not used)")


def _text_classifier(clip, cache, loaded, templates: str, show: bool, quiet: bool):

    chosen = resolve_dataset_templates(templates, loaded, clip)
    return build_with_progress(clip, loaded.classnames, chosen, cache, show, quiet)


def parse_shots(value: str) -> list[int]:
    try:
        shots = [int(s) for s in value.split(",") if s.strip()]
    except ValueError:
        raise UsageError(f"--shots {value}: give numbers of images per class, e.g. 1,2,4,8,16") from None
    if not shots or min(shots) < 1:
        raise UsageError(f"--shots {value}: give numbers of images per class of at least 1, e.g. 1,2,4,8,16")
    return sorted(set(shots))


def shot_curve_cmd(clip, cache, loaded, templates, curve: tuple, out, quiet: bool, read, runtime=None) -> None:
    """`eval --shots`: the few-shot curve on one data set (`curve`: shots, methods, seeds), one per method, printed
    (and with --report written with its plot)."""

    if out.report:  # two curves writing one folder would leave one's plot beside the other's table
        Path(out.report).mkdir(parents=True, exist_ok=True)
    lock = Lock(Path(out.report) / CURVE_LOCK, f"--report {out.report}") if out.report else contextlib.nullcontext()
    with lock:
        shots, methods, seeds = curve
        show = progress.enabled(quiet)
        clf = _text_classifier(clip, cache, loaded, templates, show, quiet)
        embedded = embed_with_progress(fp32_of(clip), loaded, show, quiet, read, runtime)
        rows = []
        with progress.bar("fitting", len(methods) * len(shots) * seeds, "fit", show) as bar:
            for method in methods:
                points = shot_curve(embedded, clf, shots, method, seeds, lambda k, s: bar and bar.update(0, advance=1))
                rows += points if not rows else points[1:]  # zero-shot once: every method draws the same shots
        title = f"{loaded.name} · {clip.spec} · {', '.join(methods)}; {plural(seeds, 'seed')}"
        if out.report:
            about = {"model": clip.spec, "dataset": loaded.name, "images": len(embedded.paths)}
            write_curve(rows, out.report, title, about)
        if out.fmt == "json":
            echo(json.dumps({"dataset": loaded.name, "model": clip.spec, "curve": rows}, indent=2))
        else:
            body = [
                [r["method"], str(r["shots"] or "zero-shot"), _pct(r["acc1"]), _pct(r["std"]), str(r["seeds"])]
                for r in rows
            ]
            print_table(title, ["method", "shots", "held-out top-1", "std", "seeds"], body)
        if not quiet and out.report:
            progress.log(f"few-shot curve written to {out.report} (curve.png, curve.csv, curve.json)")
        if not quiet and embedded.skipped:
            progress.log(f"skipped {plural(len(embedded.skipped), 'unreadable file')} (not used)")
        short = draw_shots(embedded.labels, max(shots), 0, len(clf))[2]  # short at the largest K is short anywhere
        if not quiet and short:
            progress.log(_short_note({clf.classnames[c]: n for c, n in short.items()}, max(shots), " at the larger K"))


def _short_note(short: dict[str, int], shots: int, where: str = "") -> str:
    """The stderr note naming the classes ({name: images}) that had `shots` images or fewer."""
    listed = ", ".join(f"{name} ({n})" for name, n in list(short.items())[:5])
    more = f" and {len(short) - 5} more" if len(short) > 5 else ""
    return (
        f"note: {plural(len(short), 'class', 'classes')} had {shots} images or fewer and gave what they had{where} "
        f"(one kept back to score where possible): {listed}{more}"
    )


def _pct(value) -> str:
    return "-" if value is None else f"{value:.2%}"
