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
    backends: Annotated[
        str | None,
        option(
            "--backends",
            panel=OUTPUT,
            show_default=False,
            help="MODEL: each CPU backend's speed and top-1 agreement with torch on auto's probe, and the one auto "
            "takes (measured once per model and machine, exporting the model first if needed).",
        ),
    ] = None,
    quiet: Annotated[bool, option("--quiet", "-q", panel=OUTPUT, help="No progress bar.")] = False,
) -> None:
    """List open_clip pretrained models (and whether they are downloaded), shipped and local models; or, with
    --backends MODEL, how fast each backend runs that model here and whether it keeps torch's labels."""
    choice("--format", fmt, ("table", "jsonl"))
    if backends is not None:
        _backends(backends, fmt, quiet)
        return
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


def _backends(spec: str, fmt: str | None, quiet: bool) -> None:
    from ..backends import Exports, require_onnxruntime, use_backend
    from ..backends.probe import BARS, remembered
    from ..cache import Cache
    from ..models import load_model

    require_onnxruntime("auto")
    cache = Cache()
    model = use_backend(
        load_model(spec, device="cpu", precision="fp32", cache=cache), "auto", cache=cache, show=not quiet
    )
    data = remembered(Exports(model, cache))
    rows = [
        {"backend": name, **r, "bar": BARS[name], "chosen": name == data["choice"]}
        for name, r in data["results"].items()
    ]
    if (fmt or ("table" if sys.stdout.isatty() else "jsonl")) == "jsonl":
        for r in rows:
            typer.echo(json.dumps({"model": spec, **r}))
        return
    print_table(
        f"{spec} on this CPU ({data['machine'].split('|')[0]}): auto's probe, 96 images x 36 classes",
        ["backend", "img/s", "agreement", "bar", "max prob diff", "min cosine", "re-checked", "auto"],
        [
            [
                r["backend"],
                f"{r['images_per_s']:.1f}",
                f"{r['agreement']:.1%}",
                f"{r['bar']:.1%}",
                f"{r['max_prob_diff']:.4f}",
                f"{r['min_cosine']:.5f}",
                f"{r['rechecked']:.1%}" if "rechecked" in r else "",
                "chosen" if r["chosen"] else "",
            ]
            for r in rows
        ],
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
