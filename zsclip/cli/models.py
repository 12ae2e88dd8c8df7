"""`zsclip models`: the models zsclip knows, which are downloaded, and `--prepare` / `--backends` for auto."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from zsclip.backends import Exports, prepare, require_onnxruntime
from zsclip.backends.probe import BARS, remembered
from zsclip.cli.common import choice, print_table
from zsclip.cli.options import OUTPUT, grouped, option
from zsclip.core.errors import UsageError
from zsclip.models import list_models, load_model
from zsclip.store.cache import Cache


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
            "takes, as --prepare measured them on this CPU (it measures nothing itself).",
        ),
    ] = None,
    prepare: Annotated[
        str | None,
        option(
            "--prepare",
            panel=OUTPUT,
            show_default=False,
            help="MODEL: export it to ONNX Runtime on this CPU and measure torch, onnx and onnx-int8 on auto's probe "
            "(once per model and machine; minutes for ViT-B-32), then print the table of --backends. Until then "
            "--backend auto runs the model on torch; after it, on the faster of torch and onnx.",
        ),
    ] = None,
    quiet: Annotated[bool, option("--quiet", "-q", panel=OUTPUT, help="No progress bar.")] = False,
) -> None:
    """List open_clip pretrained models (and whether they are downloaded), shipped and local models; with
    --prepare MODEL, make the ONNX backends of MODEL on this CPU and measure them; with --backends MODEL, show that
    measurement: how fast each backend runs that model here and whether it keeps torch's labels."""
    choice("--format", fmt, ("table", "jsonl"))
    if backends is not None and prepare is not None:
        raise UsageError("give --prepare MODEL or --backends MODEL, not both (--prepare prints the table too)")
    if backends is not None or prepare is not None:
        _backends(prepare if prepare is not None else backends, fmt, quiet, again=prepare is not None)
        return

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


def _backends(spec: str, fmt: str | None, quiet: bool, again: bool) -> None:
    """The probe's measurement of `spec`: made now (`again`, --prepare), else the remembered one."""

    option = "--prepare" if again else "--backends"
    if not spec.strip():
        raise UsageError(f"{option}: give a model spec (e.g. shapes, ViT-B-32:openai)")
    require_onnxruntime("auto")
    cache = Cache()
    try:
        model = load_model(spec, device="cpu", precision="fp32", cache=cache)
    except UsageError as e:  # the spec's own checks speak of --model
        raise UsageError(str(e).replace("--model ", f"{option} ", 1)) from None
    data = None if again else remembered(Exports(model, cache))
    if data is None and not again:
        raise UsageError(f"--backends {spec}: not measured on this CPU yet; zsclip models --prepare {spec} measures it")
    if data is None:
        data = prepare(model, cache=cache, show=not quiet)
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
