"""The `zsclip` command: one module per command group, each a thin layer that parses options, calls the Python
API and renders. Importing this package loads no torch: `--help` and usage errors answer at once."""

from __future__ import annotations

import os
import sys
import warnings
from typing import Annotated

import typer

from zsclip import __version__
from zsclip.cli.group import LazyGroup

app = typer.Typer(
    cls=LazyGroup,
    help="Zero-shot image classification with CLIP: label images by class names the model never trained on.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="markdown",  # help paragraphs are reflowed to the terminal's width
)
# name -> (module in zsclip/cli/, its command or Typer app, the line `zsclip --help` shows), in --help's order.
LazyGroup.commands_table = {
    "classify": (
        "classify",
        "classify_cmd",
        "Classify images by class names: a label, its probability and the top-k classes per image.",
    ),
    "eval": (
        "eval",
        "eval_cmd",
        "Zero-shot accuracy of a model on a labelled data set, with confusion and per-class reports.",
    ),
    "fit": (
        "fit",
        "fit_cmd",
        "Fit a few-shot classifier: K images per class of DATA (drawn with --seed), the rest held out and scored.",
    ),
    "train": (
        "train",
        "train_cmd",
        "Train a CLIP model contrastively on image-caption pairs (the CLIP recipe, small).",
    ),
    "locate": (
        "locate",
        "locate_cmd",
        "Find where each text happens in each video, without training: frame-text similarity curves -> segments.",
    ),
    "index": (
        "index",
        "index_cmd",
        "Put every image under PATH into the image-embedding store, for `zsclip search` (and classify) to reuse.",
    ),
    "search": (
        "search",
        "search_cmd",
        "Find the images most like a text (or --image), best first with their cosine similarity.",
    ),
    "serve": (
        "serve",
        "serve_cmd",
        "A local web page to search, classify and browse the images under PATH (Ctrl-C stops it).",
    ),
    "models": (
        "models",
        "models_cmd",
        "List open_clip pretrained models (and whether they are downloaded), shipped and local models; with "
        "--prepare MODEL, make the ONNX backends of MODEL on this CPU and measure them; with --backends MODEL, "
        "show that measurement: how fast each backend runs that model here and whether it keeps torch's labels.",
    ),
    "dupes": (
        "dupes",
        "dupes_cmd",
        "Find duplicate photos: exact copies (the same bytes) and near duplicates (resized, recompressed, "
        "re-exported, lightly edited or cropped), one record per file in a group with the one kept and why.",
    ),
    "prompts": ("prompts", "app", "List, show and compare prompt template sets."),
    "data": ("data", "data_app", "Generate data sets."),
    "cache": ("cache", "cache_app", "Inspect or clear the cache of text and image embeddings."),
}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"zsclip {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    pass


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not sys.warnoptions:  # library warnings are not for users; PYTHONWARNINGS=default shows them
        warnings.simplefilter("ignore")
    app()
