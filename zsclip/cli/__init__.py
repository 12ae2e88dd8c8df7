"""The `zsclip` command: one module per command group, each a thin layer that parses options, calls the Python
API and renders. Importing this package loads no torch: `--help` and usage errors answer at once."""

from __future__ import annotations

import os
import sys
import warnings
from typing import Annotated

import typer

from zsclip import __version__
from zsclip.cli import cache, classify, data, fit, index, locate, models, prompts, search, serve, train
from zsclip.cli import eval as eval_
from zsclip.cli.common import Group

app = typer.Typer(
    cls=Group,
    help="Zero-shot image classification with CLIP: label images by class names the model never trained on.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="markdown",  # help paragraphs are reflowed to the terminal's width
)
app.command("classify")(classify.classify_cmd)
app.command("eval")(eval_.eval_cmd)
app.command("fit")(fit.fit_cmd)
app.add_typer(prompts.app, name="prompts")
app.add_typer(data.data_app, name="data")
app.command("train")(train.train_cmd)
app.command("locate")(locate.locate_cmd)
app.command("index")(index.index_cmd)
app.command("search")(search.search_cmd)
app.command("serve")(serve.serve_cmd)
app.command("models")(models.models_cmd)
app.add_typer(cache.cache_app, name="cache")


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
