"""`zsclip data shapes`: generate the synthetic shapes data set (what the shipped model is trained on)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from zsclip.cli.group import typer_app
from zsclip.cli.options import OUTPUT, grouped, option
from zsclip.core import progress
from zsclip.core.errors import UsageError
from zsclip.core.wording import plural
from zsclip.datasets.shapes import HELD_OUT, write_dataset

data_app = typer_app("Generate data sets.")


@data_app.command("shapes")
@grouped
def data_shapes(
    out: Annotated[Path, typer.Argument(help="Folder to write (images/, captions.csv, eval/).", show_default=False)],
    n: Annotated[int, option("--n", panel=OUTPUT, help="Training images.")] = 30_000,
    seed: Annotated[int, option(panel=OUTPUT, help="Random seed; the same seed gives the same files.")] = 0,
    size: Annotated[int, option(panel=OUTPUT, help="Image side in pixels.")] = 64,
    eval_per_class: Annotated[int, option(panel=OUTPUT, help="Eval images per composition (36 compositions).")] = 30,
) -> None:
    """Coloured shapes with varied captions; six colour-shape pairings never appear in any training caption."""

    if n < 1 or size < 16 or eval_per_class < 0:
        raise UsageError("--n must be >= 1, --size >= 16 and --eval-per-class >= 0")
    start = time.perf_counter()
    counts = write_dataset(out, n=n, seed=seed, size=size, eval_per_class=eval_per_class)
    elapsed = time.perf_counter() - start
    held = ", ".join(sorted(f"{c} {s}" for c, s in HELD_OUT))
    typer.echo(json.dumps({**counts, "out": str(out), "held_out": held}))
    progress.log(f"wrote {plural(counts['train_images'] + counts['eval_images'], 'image')} in {elapsed:.1f} s to {out}")
