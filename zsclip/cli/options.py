"""The options many commands share, declared once as groups, and shown in `--help` under their panel.

A group is a dataclass whose fields are Typer options. A command takes a group as one parameter
(`speed: Speed`); `@grouped` expands the group's fields into the command's own options for Typer, and hands the
command the group built from them. Each command module then lists only what is special about it, and every option
keeps its environment variable (ZSCLIP_<OPTION>).

Panels, in the order `--help` shows them: Input (what is read), Model, Output (what is written), Speed, Cluster.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import inspect
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from zsclip.backends import backend_option, load_model
from zsclip.backends.int8 import USER_IMAGES
from zsclip.core.defaults import BACKENDS, PRECISIONS
from zsclip.core.errors import UsageError
from zsclip.core.limits import DEFAULT_FILE_TIMEOUT, DEFAULT_MAX_PIXELS
from zsclip.pipeline.images import sample_pixels
from zsclip.pipeline.sources import parse_shard

INPUT, MODEL, OUTPUT, SPEED, CLUSTER = "Input", "Model", "Output", "Speed", "Cluster"


def env(name: str) -> str:
    """Every option has an environment variable: ZSCLIP_<OPTION>."""
    return f"ZSCLIP_{name.upper().replace('-', '_')}"


def option(*decls: str, panel: str, help: str, env_name: str | None = None, show_default: bool = True):
    """typer.Option with its panel and environment variable (named after the option, or `env_name`; an option
    declared by its parameter name alone gets it from `grouped`). `[` is literal in the help, not rich markup."""
    name = env_name or next((d.lstrip("-").split("/")[0] for d in decls if d.startswith("--")), None)
    return typer.Option(
        *decls,
        envvar=env(name) if name else None,
        help=help.replace("[", "\\["),
        rich_help_panel=panel,
        show_default=show_default,
    )


def _with_env(name: str, annotation):
    """`annotation` with its typer.Option given the environment variable ZSCLIP_<NAME> if it has none."""
    if typing.get_origin(annotation) is not Annotated:
        return annotation
    base, *extras = typing.get_args(annotation)
    named = []
    for extra in extras:
        if isinstance(extra, typer.models.OptionInfo) and extra.envvar is None:
            extra = copy.copy(extra)
            extra.envvar = env(name)
        named.append(extra)
    return Annotated[(base, *named)]


class Options:
    """A set of options a command takes as one parameter (see the module docstring)."""


def grouped(command):
    """Expand each Options-annotated parameter of `command` into the group's options (keyword-only, in order), and
    call `command` with the groups built from them."""
    hints = typing.get_type_hints(command, include_extras=True)
    groups: dict[str, type] = {}
    params = []
    for p in inspect.signature(command).parameters.values():
        hint = hints.get(p.name, p.annotation)
        if isinstance(hint, type) and issubclass(hint, Options):
            groups[p.name] = hint
            group_hints = typing.get_type_hints(hint, include_extras=True)
            params += [
                inspect.Parameter(
                    f.name,
                    inspect.Parameter.KEYWORD_ONLY,
                    default=f.default,
                    annotation=_with_env(f.name, group_hints[f.name]),
                )
                for f in dataclasses.fields(hint)
            ]
        else:
            params.append(p.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=_with_env(p.name, hint)))
    names = [p.name for p in params]
    if len(names) != len(set(names)):
        raise TypeError(f"{command.__name__}: an option is declared twice: {names}")

    @functools.wraps(command)
    def run(**values):
        for name, group in groups.items():
            values[name] = group(**{f.name: values.pop(f.name) for f in dataclasses.fields(group)})
        return command(**values)

    run.__signature__ = inspect.Signature(params)
    run.__annotations__ = {p.name: p.annotation for p in params}
    del run.__wrapped__  # Typer reads the signature above, not the command's own
    return run


# -- the groups --------------------------------------------------------------------------------------------
@dataclass
class Device(Options):
    device: Annotated[str, option(panel=MODEL, help="auto, cpu, cuda, cuda:N or mps.", env_name="device")] = "auto"
    precision: Annotated[
        str | None,
        option(
            panel=MODEL,
            help=f"{', '.join(PRECISIONS)} (default: bf16 autocast on CUDA, else fp32).",
            env_name="precision",
            show_default=False,
        ),
    ] = None


@dataclass
class Backend(Options):
    backend: Annotated[
        str | None,
        option(
            panel=MODEL,
            env_name="backend",
            show_default=False,
            help="Where vectors are computed: torch, onnx, onnx-int8 (ONNX Runtime on the CPU; pip install "
            "'zsclip[onnx]'; int8 labels near a tie are settled by the fp32 tower) or auto (torch, until `zsclip "
            "models --prepare MODEL` measured onnx no slower on this CPU: then onnx, torch's vectors; never int8; "
            "torch on a GPU). Default: auto with the onnx extra installed, else torch.",
        ),
    ] = None

    def check(self) -> Backend:
        if self.backend is not None and self.backend not in BACKENDS:
            raise UsageError(f"{backend_option(self.backend)}: use one of {', '.join(BACKENDS)}")
        return self

    def load(self, spec: str, device: Device, cache=None, quiet: bool = False, sources=None, lazy: bool = True):
        """The model on --device, switched to --backend (zsclip.backends.load_model, the one place that decides);
        an int8 tower's label check is calibrated on the run's own images (`sources`) where it has to be made."""

        def calibration(clip):

            return sample_pixels(sources, clip.preprocess.geometry, USER_IMAGES)

        return load_model(
            spec,
            device=device.device,
            precision=device.precision,
            backend=self.backend,
            cache=cache,
            lazy=lazy,
            show=not quiet,
            calibration=calibration if sources else None,
        )


@dataclass
class Speed(Options):
    batch_size: Annotated[
        int | None,
        option(
            panel=SPEED,
            help="Images per forward pass (default: 256 on CUDA, else 32).",
            env_name="batch_size",
            show_default=False,
        ),
    ] = None
    workers: Annotated[
        int | None,
        option(panel=SPEED, help="Decoding processes (default: cores - 1).", env_name="workers", show_default=False),
    ] = None
    exact_preprocess: Annotated[
        bool,
        option(
            "--exact-preprocess",
            panel=SPEED,
            help="Decode JPEGs at full size (default: large JPEGs are decoded at a reduced scale, >= 2x the input).",
        ),
    ] = False


@dataclass
class Store(Options):
    store: Annotated[
        bool,
        option(
            "--store/--no-store",
            panel=SPEED,
            help="Keep image embeddings in the cache and reuse them (another run with other classes encodes no image).",
        ),
    ] = True


@dataclass
class Limits(Options):
    max_pixels: Annotated[
        int,
        option(
            panel=INPUT,
            help="Skip images with more pixels than this, from the header (decompression bombs).",
            env_name="max_pixels",
        ),
    ] = DEFAULT_MAX_PIXELS
    file_timeout: Annotated[
        float,
        option(
            panel=INPUT,
            env_name="file_timeout",
            help="Skip a file that takes longer than this many seconds to read and decode (a hung mount, a bad file).",
        ),
    ] = DEFAULT_FILE_TIMEOUT


@dataclass
class Walk(Options):
    recursive: Annotated[bool, option("--recursive/--no-recursive", panel=INPUT, help="Walk into subfolders.")] = True


@dataclass
class When(Options):
    """Search by when, where and which camera (EXIF, read once into the cache: zsclip.photos.filters)."""

    taken_after: Annotated[
        str | None,
        option(panel=INPUT, help="Only photos taken on or after this ISO date or time (2024-06-01, 2024-06-01T14:30)."),
    ] = None
    taken_before: Annotated[str | None, option(panel=INPUT, help="Only photos taken before this ISO date or time.")] = (
        None
    )
    camera: Annotated[
        str | None, option(panel=INPUT, help="Only photos from this camera: a make or model, any part, any case.")
    ] = None
    has_gps: Annotated[
        bool | None,
        option(
            "--has-gps/--no-gps", panel=INPUT, help="Only photos with (or without) a GPS position.", show_default=False
        ),
    ] = None

    def filter(self):
        from zsclip.photos.filters import PhotoFilter  # PIL: only when a command filters

        return PhotoFilter.checked(self.taken_after, self.taken_before, self.camera, self.has_gps)


@dataclass
class Quiet(Options):
    quiet: Annotated[
        bool, option("--quiet", "-q", panel=OUTPUT, help="No progress bar, no skip lines, no summary.")
    ] = False


@dataclass
class Cluster(Options):
    engine: Annotated[
        str,
        option(
            panel=CLUSTER,
            env_name="engine",
            help="local (this machine), or ray: Ray Data on a cluster, or on a local one (pip install 'zsclip[ray]').",
        ),
    ] = "local"
    ray_address: Annotated[
        str | None,
        option(
            panel=CLUSTER,
            env_name="ray_address",
            show_default=False,
            help="--engine ray: the cluster to join (default: $RAY_ADDRESS, else a local cluster for this run).",
        ),
    ] = None
    actors: Annotated[
        int | None,
        option(
            panel=CLUSTER,
            env_name="actors",
            show_default=False,
            help="--engine ray: model replicas (default: one per GPU, else 1).",
        ),
    ] = None
    gpus_per_actor: Annotated[
        float | None,
        option(
            panel=CLUSTER,
            env_name="gpus_per_actor",
            show_default=False,
            help="--engine ray: GPUs per model replica (default: 1 when the cluster has GPUs, else 0).",
        ),
    ] = None
    cpus_per_actor: Annotated[
        float | None,
        option(
            panel=CLUSTER,
            env_name="cpus_per_actor",
            show_default=False,
            help="--engine ray: CPUs per model replica (default: 1).",
        ),
    ] = None


@dataclass
class Shard(Options):
    shard: Annotated[
        str | None,
        option(
            panel=CLUSTER,
            env_name="shard",
            show_default=False,
            help="i/N: only the files whose path (under PATH) hashes to shard i of N; N runs cover each file once.",
        ),
    ] = None

    def parsed(self) -> tuple[int, int] | None:

        return parse_shard(self.shard)


# -- options several commands declare with their own default or help -------------------------------------
def model_option(
    help: str = "Model spec: ARCH:TAG, ARCH:/path/weights.pt, hf-hub:org/repo, local-dir:/path, a "
    "model directory, or a shipped model name.",
):
    return option("--model", "-m", panel=MODEL, help=help)


ModelOpt = Annotated[str, model_option()]
TemplatesOpt = Annotated[
    str,
    option(
        "--templates",
        "-t",
        panel=MODEL,
        help="Template set name (zsclip prompts list), a file with one template per line, or 'default'.",
    ),
]
ClassifierOpt = Annotated[
    Path | None,
    option(
        "--classifier",
        panel=MODEL,
        show_default=False,
        help="A few-shot classifier file from zsclip fit, in place of class names (made for this --model).",
    ),
]
RootOpt = Annotated[Path | None, option(panel=INPUT, help="An existing copy of a named data set (no download).")]
ClassnamesOpt = Annotated[
    str | None,
    option(
        panel=INPUT, help="Class names for a folder or csv: data set: imagenet, cifar10, cifar100, shapes, or a file."
    ),
]
LimitOpt = Annotated[int | None, option(panel=INPUT, help="Score a stratified subset of N images.", show_default=False)]
