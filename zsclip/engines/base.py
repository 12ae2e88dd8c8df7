"""What an engine is: an executor of the embed stream. Given sources and reading options, it yields EmbeddedBatch
records in walk order (every image's vector, decoded and encoded here or taken from the image-embedding store,
and a skip record for every file that could not be read). The stages inside are the same whoever runs them: the
walk (zsclip.pipeline.sources), decoding and its limits (zsclip.pipeline.images), encoding (zsclip.pipeline.encode),
the store
(zsclip.store.embeddings); an engine decides only where they run."""

from __future__ import annotations

import dataclasses
from collections.abc import Container, Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

from zsclip.core.errors import UsageError
from zsclip.core.limits import DEFAULT_FILE_TIMEOUT, DEFAULT_MAX_PIXELS, check_limits

if TYPE_CHECKING:
    import numpy as np

    from zsclip.models import ClipModel
    from zsclip.store.cache import Cache

ENGINES = ("local", "ray")


@dataclass
class EmbeddedBatch:
    paths: list[str]
    features: np.ndarray | None  # [len(paths), dim], unit-norm float32
    skipped: list[tuple[str, str]] = field(default_factory=list)
    reused: int = 0  # how many vectors came from the image-embedding store
    skipped_at: list[int] = field(default_factory=list)  # per skip record: how many of `paths` precede it
    encoded: list[int] = field(default_factory=list)  # indices into paths that were decoded and encoded here
    content_hashes: list[str | None] | None = None  # per path, where the engine read the bytes anyway


@dataclass
class ReadOptions:
    """How the sources are read, whichever engine reads them (the CLI's reading options).

    `store`: files already in the image-embedding store are not decoded or encoded again, and every newly encoded
    image is added to it. Unless `exact`, large JPEGs are decoded in draft mode (zsclip.pipeline.images.load_image).
    Files
    over `max_pixels`, or taking longer than `file_timeout` seconds, are skipped; paths in `exclude` are left out
    (a resumed run has them already, zsclip.pipeline.sources.Exclude); `shard` (i, N) keeps the files of shard i only.
    Batches default to 256 images on CUDA, 32 elsewhere. `decode_on`: "auto" decodes JPEGs on the GPU when the
    model runs on CUDA (zsclip.pipeline.gpu_decode), "cpu" always uses PIL in worker processes, "device" forces the
    tensor path
    on the model's device (used by tests on the CPU); the local engine's alone."""

    batch_size: int | None = None
    workers: int | None = None
    recursive: bool = True
    store: bool = True
    cache: Cache | None = None
    exact: bool = False
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    file_timeout: float | None = DEFAULT_FILE_TIMEOUT
    exclude: Container[str] = ()
    shard: tuple[int, int] | None = None
    decode_on: str = "auto"

    def checked(self) -> ReadOptions:
        check_limits(self.batch_size, self.workers, self.max_pixels, self.file_timeout)
        return self

    def but(self, **changes) -> ReadOptions:
        """A copy with `changes` (dataclasses.replace): `read.but(workers=0)`."""
        return replace(self, **changes)


def reading(
    read: ReadOptions | None, runtime: Runtime | None, fields: dict, caller: str = "the call"
) -> tuple[ReadOptions, Runtime | None]:
    """The public API's shorthand, taken apart once at its edge: `classify(model, clf, "photos/", batch_size=16,
    engine="ray", ray=RayOptions(...))` reads as `read=ReadOptions(batch_size=16), runtime=Runtime("ray", ...)`
    (`ray` alone configures Ray without choosing it, as before). An unknown name is a TypeError naming `caller`."""
    fields = dict(fields)
    engine, ray = fields.pop("engine", None), fields.pop("ray", None)
    if engine is not None or ray is not None:
        runtime = Runtime(engine or (runtime.engine if runtime else "local"), ray)
    unknown = [name for name in fields if name not in {f.name for f in dataclasses.fields(ReadOptions)}]
    if unknown:
        raise TypeError(f"{caller}() got an unexpected keyword argument {unknown[0]!r}")
    read = read or ReadOptions()
    return (read.but(**fields) if fields else read), runtime


@dataclass(frozen=True)
class Runtime:
    """Who runs the embed stream: the `engine` ("local": this process and its decoding workers; "ray": Ray Data,
    configured by `ray`, a zsclip.engines.ray.RayOptions). The CLI's --engine and --ray-* options."""

    engine: str = "local"
    ray: Any = None  # zsclip.engines.ray.RayOptions for engine "ray"


class Engine(Protocol):
    """An executor of the embed stream (see the module docstring)."""

    def embed(
        self, model: ClipModel, sources: list[tuple[str, bool]], read: ReadOptions
    ) -> Iterator[EmbeddedBatch]: ...


def check_engine(engine: str) -> str:
    if engine not in ENGINES:
        raise UsageError(f"--engine {engine}: use one of {', '.join(ENGINES)}")
    return engine
