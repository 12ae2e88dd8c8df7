"""The executors of the embed stream: `local` (this process and its supervised decoding workers, or the GPU
decoder) and `ray` (Ray Data tasks and model actors on a cluster). Both implement zsclip.engines.base.Engine
and yield the same EmbeddedBatch records; this is the one place that picks between them.

Nothing heavy is imported here: the CLI imports check_engine at start-up."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from zsclip.engines.base import ENGINES, EmbeddedBatch, Engine, ReadOptions, Runtime, check_engine, reading
from zsclip.engines.local import LocalEngine
from zsclip.engines.ray import RayEngine

if TYPE_CHECKING:
    from zsclip.models import ClipModel

__all__ = [
    "ENGINES",
    "EmbeddedBatch",
    "Engine",
    "ReadOptions",
    "Runtime",
    "check_engine",
    "embed_stream",
    "engine_for",
    "reading",
]


def engine_for(runtime: Runtime | None = None) -> Engine:
    """The executor `runtime` names: the local engine, or Ray (configured by runtime.ray)."""
    runtime = runtime or Runtime()
    if check_engine(runtime.engine) == "ray":
        return RayEngine(runtime.ray)

    return LocalEngine()


def embed_stream(
    model: ClipModel,
    sources: list[tuple[str, bool]],
    read: ReadOptions | None = None,
    runtime: Runtime | None = None,
) -> Iterator[EmbeddedBatch]:
    """Decode and encode in batches, in walk order: what classify, index, eval and prompt comparison all stand on.
    `read` says how the sources are read, `runtime` who runs the stages."""
    yield from engine_for(runtime).embed(model, sources, (read or ReadOptions()).checked())
