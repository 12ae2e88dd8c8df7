"""`zsclip train`: a small CLIP trained on image-caption pairs (zsclip.train)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from zsclip.cli.options import INPUT, MODEL, OUTPUT, SPEED, Options, Quiet, grouped, option
from zsclip.core import progress
from zsclip.core.errors import UsageError
from zsclip.zeroshot.prompts import load_templates

TRAINING = "Training"

_TRAIN_DEFAULTS = {"epochs": 10, "batch_size": 256, "lr": 1e-3, "wd": 0.1, "warmup": 200, "seed": 0}


@dataclass
class Recipe(Options):
    """The training hyperparameters (None: the default, or the resumed run's own)."""

    epochs: Annotated[int | None, option(panel=TRAINING, help="(default: 10)", show_default=False)] = None
    batch_size: Annotated[int | None, option(panel=TRAINING, help="(default: 256)", show_default=False)] = None
    lr: Annotated[
        float | None, option(panel=TRAINING, help="Peak learning rate. (default: 0.001).", show_default=False)
    ] = None
    wd: Annotated[
        float | None,
        option(panel=TRAINING, help="AdamW weight decay (weight matrices only). (default: 0.1).", show_default=False),
    ] = None
    warmup: Annotated[
        int | None, option(panel=TRAINING, help="Linear warmup steps. (default: 200).", show_default=False)
    ] = None
    seed: Annotated[int | None, option(panel=TRAINING, help="(default: 0)", show_default=False)] = None

    def given(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    def values(self) -> dict:
        """Every hyperparameter, defaults filled in, checked."""
        values = {**_TRAIN_DEFAULTS, **self.given()}
        if values["epochs"] < 1 or values["batch_size"] < 2 or values["lr"] <= 0 or values["warmup"] < 0:
            raise UsageError("--epochs >= 1, --batch-size >= 2, --lr > 0 and --warmup >= 0 are needed")
        return values


@grouped
def train_cmd(
    data: Annotated[
        Path | None, typer.Argument(help="captions CSV (filepath,caption) or a folder holding captions.csv.")
    ] = None,
    config: Annotated[
        str | None,
        option(
            panel=MODEL,
            help="Model config: a JSON file in open_clip's model_cfg form, "
            "or a name (shapes-rn, tiny-vit, any open_clip architecture).",
        ),
    ] = None,
    output: Annotated[Path | None, option("--output", "-o", panel=OUTPUT, help="Model directory.")] = None,
    resume: Annotated[
        Path | None,
        option(panel=OUTPUT, help="Continue the run in this directory from its last checkpoint, as it was set."),
    ] = None,
    device: Annotated[str, option(panel=SPEED, help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    precision: Annotated[
        str, option(panel=SPEED, help="auto (bf16 autocast on CUDA, else fp32), fp32, bf16.")
    ] = "auto",
    workers: Annotated[int, option(panel=SPEED, help="Image decoding processes.")] = 0,
    eval_dir: Annotated[Path | None, option(panel=INPUT, help="ImageFolder eval split (default: DATA/eval).")] = None,
    templates: Annotated[
        str, option("--templates", "-t", panel=MODEL, help="Template set for eval; recommended.")
    ] = "photo",
    *,
    recipe: Recipe,
    quiet: Quiet,
) -> None:
    """Train a CLIP model contrastively on image-caption pairs (the CLIP recipe, small)."""
    from zsclip.train import TrainConfig, train  # heavy: torch and open_clip at its top

    show = progress.enabled(quiet.quiet)
    if resume is not None:
        named = {**recipe.given(), "config": config, "eval_dir": eval_dir}
        given = [f"--{k.replace('_', '-')}" for k, v in named.items() if v is not None]
        if data is not None or output is not None or given:
            what = ", ".join(([] if data is None else ["DATA"]) + ([] if output is None else ["--output"]) + given)
            raise UsageError(f"--resume continues the run with the settings it was started with; drop {what}")
        typer.echo(
            json.dumps(train(TrainConfig(data="", config="", output=str(resume)), resume=True, show_progress=show))
        )
        return
    if data is None or config is None or output is None:
        raise UsageError("give DATA, --config and --output (or --resume DIR)")
    values = recipe.values()
    if precision not in ("auto", "fp32", "bf16"):
        raise UsageError(f"--precision {precision}: use auto, fp32 or bf16")
    if workers < 0:
        raise UsageError(f"--workers {workers}: give 0 or more")
    if eval_dir is not None and not eval_dir.is_dir():
        raise UsageError(f"--eval-dir {eval_dir}: no such folder (an ImageFolder of class folders)")
    load_templates(templates)
    cfg = TrainConfig(
        data=str(data),
        config=config,
        output=str(output),
        device=device,
        precision=precision,
        workers=workers,
        eval_dir=str(eval_dir) if eval_dir else None,
        templates=templates,
        **values,
    )
    typer.echo(json.dumps(train(cfg, show_progress=show)))
