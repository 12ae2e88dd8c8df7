"""`zsclip cache path|info|clear`: where the cache is, what it holds, and clearing it."""

from __future__ import annotations

from typing import Annotated

import typer

from zsclip.cli.group import typer_app
from zsclip.cli.options import grouped, option
from zsclip.models import fingerprint_spec
from zsclip.store.cache import PARTS, Cache, cache_dir, tree_bytes

cache_app = typer_app("Inspect or clear the cache of text and image embeddings.")


@cache_app.command("path")
def cache_path() -> None:
    """Print the cache directory ($ZSCLIP_CACHE_DIR overrides it)."""

    typer.echo(str(cache_dir()))


@cache_app.command("info")
def cache_info() -> None:
    """The cache's size on disk, part by part (embeddings, ONNX exports, search snapshots, thumbnails, data sets),
    and the cached text and image embeddings and ONNX exports of each model."""

    cache = Cache()
    entries = cache.info()
    usage = cache.disk_usage()
    typer.echo(f"cache: {cache.directory} ({_size(sum(usage.values()))} on disk)")
    for part, what in {"embeddings": "embeddings and file hashes (SQLite)", **PARTS}.items():
        typer.echo(f"  {what}\t{_size(usage[part])}")
    exports: dict[str, list] = {}
    for fingerprint, spec, folder in cache.exports():
        exports.setdefault(fingerprint, [spec, 0])[1] += tree_bytes(folder)
    for e in entries:
        size = exports.pop(e.fingerprint, [None, 0])[1]
        typer.echo(
            f"{e.spec or '?'}\t{e.fingerprint}\t{e.text_vectors} text vectors\t{e.image_vectors} image vectors"
            f"\t{_size(e.bytes)}" + (f"\tONNX exports {_size(size)}" if size else "")
        )
    for fingerprint, (spec, size) in exports.items():  # exported, nothing embedded yet
        typer.echo(f"{spec}\t{fingerprint}\t0 text vectors\t0 image vectors\t0 B\tONNX exports {_size(size)}")
    if not entries and not exports:
        typer.echo("nothing cached")


@cache_app.command("clear")
@grouped
def cache_clear(
    model: Annotated[str | None, option("--model", "-m", panel="Model", help="Only this model's entries.")] = None,
):
    """Delete cached embeddings, ONNX exports, search snapshots and thumbnails: all, or one model's embeddings and
    exports. Downloaded data sets are kept (remove the cache's datasets folder by hand)."""

    cache = Cache()
    before = cache.disk_usage()
    texts, images = cache.clear(fingerprint_spec(model, cache) if model else None)
    freed = sum(before.values()) - sum(cache.disk_usage().values())
    typer.echo(
        f"removed {texts} text vectors and {images} image vectors"
        + (f" of {model} and its ONNX exports" if model else ", the ONNX exports, search snapshots and thumbnails")
        + f" ({_size(max(freed, 0))} freed)"
    )


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
