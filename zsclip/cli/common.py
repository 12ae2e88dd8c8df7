"""What every command shares: the error-handling group, option declarations and small renderers.

Nothing here imports torch, open_clip, pandas, scikit-learn or matplotlib: `--help` and usage errors must answer
at once. Commands import the API inside their bodies."""

from __future__ import annotations

import contextlib
import sys

from zsclip.cli.options import Cluster, Limits, Speed, Store, Walk
from zsclip.core import progress
from zsclip.core.defaults import DEFAULT_MODEL
from zsclip.core.errors import UsageError
from zsclip.engines import ReadOptions, Runtime, check_engine
from zsclip.engines.ray import RayOptions, require_ray
from zsclip.engines.ray_output import contain_output
from zsclip.fewshot import load_classifier
from zsclip.fewshot.files import model_of
from zsclip.zeroshot.classifier import build_classifier

_RESULTS: list = []  # the stream results go to, when it is not sys.stdout (see engine_options)


def results():
    """Where a command's results go: stdout, or the private copy of it while Ray runs (zsclip.engines.ray_output)."""
    return _RESULTS[0] if _RESULTS else sys.stdout


def echo(text: str) -> None:
    stream = results()
    stream.write(text + "\n")
    stream.flush()


def choice(option: str, value: str | None, allowed: tuple[str, ...]) -> None:
    if value is not None and value not in allowed:
        raise UsageError(f"{option} {value}: use one of {', '.join(allowed)}")


def engine_options(cluster: Cluster) -> Runtime:
    """--engine and the Ray options as the run's Runtime, checked before any model loads."""

    given = [
        n
        for n, v in (
            ("--ray-address", cluster.ray_address),
            ("--actors", cluster.actors),
            ("--gpus-per-actor", cluster.gpus_per_actor),
            ("--cpus-per-actor", cluster.cpus_per_actor),
        )
        if v is not None
    ]
    if check_engine(cluster.engine) == "local":
        if given:
            raise UsageError(f"{given[0]} is an option of --engine ray (add --engine ray, or leave it out)")
        return Runtime()

    require_ray()
    options = RayOptions(cluster.ray_address, cluster.actors, cluster.gpus_per_actor, cluster.cpus_per_actor).check()
    contained = contain_output()  # from here on, Ray's output cannot reach stdout
    if contained is not None and not _RESULTS:
        _RESULTS.append(contained[0])
        progress.stderr.file = contained[1]
    return Runtime("ray", options)


def read_options(speed: Speed, limits: Limits, store: Store | None = None, walk: Walk | None = None) -> ReadOptions:
    """The reading options, checked (usage errors before any model loads)."""
    return ReadOptions(
        batch_size=speed.batch_size,
        workers=speed.workers,
        exact=speed.exact_preprocess,
        max_pixels=limits.max_pixels,
        file_timeout=limits.file_timeout,
        store=True if store is None else store.store,
        recursive=True if walk is None else walk.recursive,
    ).checked()


def build_with_progress(clip, names, templates, cache, show: bool, quiet: bool = False):
    """Build the classifier; a progress bar appears only if prompts actually need encoding. Its notes (classes
    told apart by number, ...) go to stderr."""

    with contextlib.ExitStack() as stack:
        bars = []

        def report(done: int, total: int) -> None:
            if show and not bars:
                bars.append(stack.enter_context(progress.bar("encoding prompts", total, "prompt", show)))
            if bars:
                bars[0].update(0, completed=done, total=total)

        clf = build_classifier(clip, names, templates, cache=cache, progress=report)
    if not quiet:
        for note in clf.notes:
            progress.log(f"note: {note}")
    return clf


def print_table(title: str | None, columns: list[str], rows: list[list[str]], right: bool = True, file=None) -> None:
    """A rich table on stdout (the human format of results), or into `file` with every column whole (no terminal
    width to fit)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(show_edge=False, header_style="bold", title=title)
    for i, col in enumerate(columns):
        table.add_column(col, justify="right" if right and i else "left", no_wrap=file is not None)
    for row in rows:
        table.add_row(*row)
    if file is None:
        Console(file=results(), highlight=False).print(table)
        return
    width = sum(max([len(c), *(len(r[i]) for r in rows)]) + 3 for i, c in enumerate(columns))
    Console(file=file, highlight=False, soft_wrap=False, width=width).print(table)


def fitted_classifier(path, clip, quiet: bool):
    """--classifier FILE as the run's Classifier (refused with one line if made for other weights)."""

    clf = load_classifier(path, clip)
    if not quiet:
        for note in clf.notes:
            progress.log(note)
    return clf


def model_for_classifier(model: str | None, classifier) -> str:
    """The model of a run with --classifier FILE and no --model of its own: the one the file was fitted with."""

    if classifier is None or (model is not None and model != DEFAULT_MODEL):
        return model or DEFAULT_MODEL
    fitted = model_of(classifier)
    if fitted and fitted != model:
        progress.log(f"note: --model {fitted}, the model {classifier} was fitted with")
    return fitted or model or DEFAULT_MODEL
