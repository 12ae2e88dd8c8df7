"""What every command shares: the error-handling group, option declarations and small renderers.

Nothing here imports torch, open_clip, pandas, scikit-learn or matplotlib: `--help` and usage errors must answer
at once. Commands import the API inside their bodies."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Annotated

import click
import typer
from typer.core import TyperGroup

from .. import progress
from ..defaults import BACKENDS, PRECISIONS
from ..errors import UsageError, ZsclipError
from ..limits import DEFAULT_FILE_TIMEOUT, DEFAULT_MAX_PIXELS

# Typer >= 0.29 vendors its own click; older releases raise click's exceptions.
_CLICK_ERRORS = (click.ClickException, click.exceptions.Abort, getattr(typer, "TyperException", click.ClickException))


class Group(TyperGroup):
    """Every error a user can cause ends as one line on stderr and an exit code; never a traceback."""

    def invoke(self, ctx):
        # Typer turns Ctrl-C into a silent Exit(130) before main() below could see it: say so here.
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            fail("interrupted", 130)

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _CLICK_ERRORS as exc:
            if not hasattr(exc, "format_message"):  # Abort
                fail("interrupted", 130)
            code = getattr(exc, "exit_code", 1)
            ctx = getattr(exc, "ctx", None)
            message = exc.format_message()
            if not message and ctx is not None:  # a group run without a command: its help was printed
                sys.exit(code)
            where = f" (see '{ctx.command_path} --help')" if code == 2 and ctx else ""
            fail(f"{message}{where}", code)
        except ZsclipError as exc:
            fail(str(exc), exc.exit_code)
        except MemoryError:
            fail("out of memory: try a smaller --batch-size or fewer --workers (finished output is kept)", 1)
        except RuntimeError as exc:  # torch.OutOfMemoryError (CUDA) and CPU allocator failures
            if "out of memory" not in str(exc).lower():
                raise
            first = str(exc).splitlines()[0][:200]
            fail(f"out of memory ({first}): try a smaller --batch-size (finished output is kept)", 1)
        except KeyboardInterrupt:
            fail("interrupted", 130)
        sys.exit(rv if isinstance(rv, int) else 0)


_RESULTS: list = []  # the stream results go to, when it is not sys.stdout (see engine_options)


def results():
    """Where a command's results go: stdout, or the private copy of it while Ray runs (zsclip.engines.ray_output)."""
    return _RESULTS[0] if _RESULTS else sys.stdout


def echo(text: str) -> None:
    stream = results()
    stream.write(text + "\n")
    stream.flush()


def fail(message: str, code: int) -> None:
    progress.log(f"error: {message}")
    sys.exit(code)


def typer_app(help: str) -> typer.Typer:
    return typer.Typer(cls=Group, help=help, no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)


def env(name: str) -> str:
    """Every option has an environment variable: ZSCLIP_<OPTION>."""
    return f"ZSCLIP_{name.upper().replace('-', '_')}"


def choice(option: str, value: str | None, allowed: tuple[str, ...]) -> None:
    if value is not None and value not in allowed:
        raise UsageError(f"{option} {value}: use one of {', '.join(allowed)}")


ModelOpt = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        envvar=env("model"),
        help="Model spec: ARCH:TAG, ARCH:/path/weights.pt, hf-hub:org/repo, local-dir:/path, a model directory, "
        "or a shipped model name.",
    ),
]
TemplatesOpt = Annotated[
    str,
    typer.Option(
        "--templates",
        "-t",
        envvar=env("templates"),
        help="Template set name (zsclip prompts list), a file with one template per line, or 'default'.",
    ),
]
RootOpt = Annotated[
    Path | None,
    typer.Option(envvar=env("root"), help="An existing copy of a named data set (no download)."),
]
ClassnamesOpt = Annotated[
    str | None,
    typer.Option(
        envvar=env("classnames"),
        help="Class names for a folder or csv: data set: imagenet, cifar10, cifar100, shapes, or a file.",
    ),
]
LimitOpt = Annotated[
    int | None, typer.Option(envvar=env("limit"), help="Score a stratified subset of N images.", show_default=False)
]
BatchOpt = Annotated[
    int | None,
    typer.Option(
        envvar=env("batch_size"), help="Images per forward pass (default: 256 on CUDA, else 32).", show_default=False
    ),
]
WorkersOpt = Annotated[
    int | None,
    typer.Option(envvar=env("workers"), help="Decoding processes (default: cores - 1).", show_default=False),
]
DeviceOpt = Annotated[str, typer.Option(envvar=env("device"), help="auto, cpu, cuda, cuda:N or mps.")]
PrecisionOpt = Annotated[
    str | None,
    typer.Option(
        envvar=env("precision"),
        help=f"{', '.join(PRECISIONS)} (default: bf16 autocast on CUDA, else fp32).",
        show_default=False,
    ),
]
BackendOpt = Annotated[
    str | None,
    typer.Option(
        envvar=env("backend"),
        help="Where vectors are computed: torch, onnx, onnx-int8 (ONNX Runtime on the CPU; pip install "
        "'zsclip[onnx]') or auto (the fastest that agrees with torch on a built-in check; torch on a GPU). "
        "Default: torch.",
        show_default=False,
    ),
]
StoreOpt = Annotated[
    bool,
    typer.Option(
        "--store/--no-store",
        envvar=env("store"),
        help="Keep image embeddings in the cache and reuse them (another run with other classes encodes no image).",
    ),
]
ExactOpt = Annotated[
    bool,
    typer.Option(
        "--exact-preprocess",
        envvar=env("exact_preprocess"),
        help="Decode JPEGs at full size (default: large JPEGs are decoded at a reduced scale, >= 2x the input).",
    ),
]
QuietOpt = Annotated[
    bool, typer.Option("--quiet", "-q", envvar=env("quiet"), help="No progress bar, no skip lines, no summary.")
]
MaxPixelsOpt = Annotated[
    int,
    typer.Option(
        envvar=env("max_pixels"),
        help="Skip images with more pixels than this, from the header (decompression bombs).",
    ),
]
FileTimeoutOpt = Annotated[
    float,
    typer.Option(
        envvar=env("file_timeout"),
        help="Skip a file that takes longer than this many seconds to read and decode (a hung mount, a bad file).",
    ),
]
DEFAULT_READ = {"max_pixels": DEFAULT_MAX_PIXELS, "file_timeout": DEFAULT_FILE_TIMEOUT}
EngineOpt = Annotated[
    str,
    typer.Option(
        envvar=env("engine"),
        help="local (this machine), or ray: Ray Data on a cluster, or on a local one (pip install 'zsclip[ray]').",
    ),
]
RayAddressOpt = Annotated[
    str | None,
    typer.Option(
        envvar=env("ray_address"),
        help="--engine ray: the cluster to join (default: $RAY_ADDRESS, else a local cluster for this run).",
        show_default=False,
    ),
]
ActorsOpt = Annotated[
    int | None,
    typer.Option(
        envvar=env("actors"), help="--engine ray: model replicas (default: one per GPU, else 1).", show_default=False
    ),
]
GpusPerActorOpt = Annotated[
    float | None,
    typer.Option(
        envvar=env("gpus_per_actor"),
        help="--engine ray: GPUs per model replica (default: 1 when the cluster has GPUs, else 0).",
        show_default=False,
    ),
]
CpusPerActorOpt = Annotated[
    float | None,
    typer.Option(
        envvar=env("cpus_per_actor"), help="--engine ray: CPUs per model replica (default: 1).", show_default=False
    ),
]
ShardOpt = Annotated[
    str | None,
    typer.Option(
        envvar=env("shard"),
        help="i/N: only the files whose path (under PATH) hashes to shard i of N; N runs cover each file once.",
        show_default=False,
    ),
]


def engine_options(
    engine: str, address: str | None, actors: int | None, gpus: float | None, cpus: float | None
) -> dict:
    """--engine and the Ray options as embed_stream's keyword arguments, checked before any model loads."""
    from ..engines import check_engine
    from ..engines.ray import RayOptions, require_ray

    given = [n for n, v in (("--ray-address", address), ("--actors", actors), ("--gpus-per-actor", gpus),
                            ("--cpus-per-actor", cpus)) if v is not None]  # fmt: skip
    if check_engine(engine) == "local":
        if given:
            raise UsageError(f"{given[0]} is an option of --engine ray (add --engine ray, or leave it out)")
        return {}
    require_ray()
    options = RayOptions(address, actors, gpus, cpus).check()
    from ..engines.ray_output import contain_output

    contained = contain_output()  # from here on, Ray's output cannot reach stdout
    if contained is not None and not _RESULTS:
        _RESULTS.append(contained[0])
        progress.stderr.file = contained[1]
    return {"engine": "ray", "ray": options}


def read_options(batch_size, workers, store, exact_preprocess, max_pixels, file_timeout) -> dict:
    """The reading options as the API's keyword arguments, checked (usage errors before any model loads)."""
    from ..limits import check_limits

    check_limits(batch_size, workers, max_pixels, file_timeout)
    return {
        "batch_size": batch_size,
        "workers": workers,
        "store": store,
        "exact": exact_preprocess,
        "max_pixels": max_pixels,
        "file_timeout": file_timeout,
    }


def check_backend(backend: str | None) -> None:
    choice("--backend", backend, BACKENDS)


def with_backend(clip, backend: str | None, cache=None, quiet: bool = False):
    """The loaded model switched to --backend (exported to ONNX on first use, with progress unless --quiet)."""
    from ..backends import use_backend

    return use_backend(clip, backend, cache=cache, show=not quiet)


def build_with_progress(clip, names, templates, cache, show: bool, quiet: bool = False):
    """Build the classifier; a progress bar appears only if prompts actually need encoding. Its notes (classes
    told apart by number, ...) go to stderr."""
    from ..text import build_classifier

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


def print_table(title: str | None, columns: list[str], rows: list[list[str]], right: bool = True) -> None:
    """A rich table on stdout (the human format of results)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(show_edge=False, header_style="bold", title=title)
    for i, col in enumerate(columns):
        table.add_column(col, justify="right" if right and i else "left")
    for row in rows:
        table.add_row(*row)
    Console(file=results(), highlight=False).print(table)
