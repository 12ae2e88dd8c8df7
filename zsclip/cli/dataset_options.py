"""What eval-like commands (eval, fit) read: the data set options, the data set checked before any model loads,
and its image embeddings with a progress bar."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from zsclip.cli.options import INPUT, ClassnamesOpt, LimitOpt, Options, RootOpt, option
from zsclip.core import progress
from zsclip.core.errors import UsageError
from zsclip.datasets import load_dataset
from zsclip.engines import ReadOptions, Runtime
from zsclip.evaluate.run import embed_dataset
from zsclip.store.cache import Cache


@dataclass
class Data(Options):
    """Which data set, and how it is read."""

    root: RootOpt = None
    classnames: ClassnamesOpt = None
    limit: LimitOpt = None
    split: Annotated[str, option(panel=INPUT, help="The split of a wds data set (its folder: test, train, ...).")] = (
        "test"
    )

    def root_dir(self) -> str | None:
        return str(self.root) if self.root else None

    def check(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise UsageError(f"--limit {self.limit}: must be at least 1")


def eval_data(dataset: str, data: Data, task: str | None = None):
    """The data set an eval-like command scores, checked before any model is loaded."""

    data.check()
    loaded = load_dataset(dataset, root=data.root_dir(), classnames=data.classnames, split=data.split, task=task)
    loaded = loaded.limit(data.limit)
    if not loaded.items:
        raise UsageError(f"{dataset}: no images found")
    return loaded


def embed_with_progress(clip, dataset, show: bool, quiet: bool, read: ReadOptions, runtime: Runtime | None = None):
    """Image embeddings of a data set (reusing the store), with a progress bar and skip lines on stderr."""

    with progress.bar("encoding images", len(dataset.items), "img", show) as bar:

        def tick(done: int, skipped: int) -> None:
            if bar:
                bar.update(0, advance=done + skipped, extra=f"{skipped} skipped" if skipped else "")

        embedded = embed_dataset(clip, dataset, read, runtime, on_batch=tick)
    if not quiet:
        for path, reason in embedded.skipped:
            progress.log(f"skipped {path}: {reason}")
        if embedded.reused:
            progress.log(f"{embedded.reused} of {len(embedded.paths)} image embeddings came from the image store")
    return embedded


def load_for_eval(model: str, device, backend, quiet: bool):
    """The model (switched to --backend) and the cache, for eval and fit."""

    cache = Cache()
    return backend.load(model, device, cache, quiet), cache
