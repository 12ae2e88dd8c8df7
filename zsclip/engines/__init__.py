"""The executors of the embed stream: `local` (this process and its supervised decoding workers, or the GPU
decoder) and `ray` (Ray Data tasks and model actors on a cluster). Both implement zsclip.engines.base.Engine
and yield the same EmbeddedBatch records; this is the one place that picks between them.

Nothing heavy is imported here: the CLI imports check_engine at start-up."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from .base import ENGINES, EmbeddedBatch, Engine, ReadOptions, check_engine

if TYPE_CHECKING:
    from ..models import ClipModel
    from .ray import RayOptions

__all__ = ["ENGINES", "EmbeddedBatch", "Engine", "ReadOptions", "check_engine", "embed_stream", "engine_for"]


def engine_for(engine: str = "local", ray: RayOptions | None = None) -> Engine:
    """The executor `engine` names: "local", or "ray" (configured by `ray`)."""
    if check_engine(engine) == "ray":
        from .ray import RayEngine

        return RayEngine(ray)
    from .local import LocalEngine

    return LocalEngine()


def embed_stream(
    model: ClipModel,
    sources: list[tuple[str, bool]],
    *,
    engine: str = "local",
    ray: RayOptions | None = None,
    **read,
) -> Iterator[EmbeddedBatch]:
    """Decode and encode in batches, in walk order: what classify, index, eval and prompt comparison all stand on.
    `read` are the ReadOptions (batch_size, workers, recursive, store, cache, exact, max_pixels, file_timeout,
    exclude, shard, decode_on); `engine` and `ray` say who runs it."""
    yield from engine_for(engine, ray).embed(model, sources, ReadOptions(**read).checked())
