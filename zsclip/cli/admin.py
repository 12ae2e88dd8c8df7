"""`zsclip models` and `zsclip cache path|info|clear`."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from .common import choice, print_table, typer_app
from .options import OUTPUT, grouped, option

cache_app = typer_app("Inspect or clear the cache of text and image embeddings.")


@grouped
def models_cmd(
    downloaded: Annotated[
        bool, option("--downloaded", panel=OUTPUT, help="Only models whose weights are here.")
    ] = False,
    fmt: Annotated[
        str | None,
        option("--format", "-f", panel=OUTPUT, help="table or jsonl (default: table on a terminal, else jsonl)."),
    ] = None,
) -> None:
    """List open_clip pretrained models (and whether they are downloaded), shipped and local models."""
    choice("--format", fmt, ("table", "jsonl"))
    from ..models import list_models

    rows = [r for r in list_models() if r["available"] or not downloaded]
    if (fmt or ("table" if sys.stdout.isatty() else "jsonl")) == "jsonl":
        for r in rows:
            typer.echo(json.dumps(r))
        return
    print_table(
        None,
        ["spec", "source", "available"],
        [[r["spec"], r["source"], "yes" if r["available"] else ""] for r in rows],
        right=False,
    )


@cache_app.command("path")
def cache_path() -> None:
    """Print the cache directory ($ZSCLIP_CACHE_DIR overrides it)."""
    from ..cache import cache_dir

    typer.echo(str(cache_dir()))


@cache_app.command("info")
def cache_info() -> None:
    """Cached text and image embeddings per model, and the cache's size on disk."""
    from ..cache import Cache

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
@grouped
def cache_clear(
    model: Annotated[str | None, option("--model", "-m", panel="Model", help="Only this model's entries.")] = None,
):
    """Delete cached embeddings: all, or one model's."""
    from ..cache import Cache
    from ..models import fingerprint_spec

    cache = Cache()
    texts, images = cache.clear(fingerprint_spec(model, cache) if model else None)
    typer.echo(f"removed {texts} text vectors and {images} image vectors" + (f" of {model}" if model else ""))


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
