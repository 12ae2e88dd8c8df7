"""`zsclip prompts list|show|compare`: the template sets, and which works best on a data set."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from zsclip.cli.common import echo, engine_options, print_table, read_options
from zsclip.cli.dataset_options import Data, embed_with_progress, eval_data
from zsclip.cli.group import typer_app
from zsclip.cli.options import OUTPUT, Backend, Cluster, Device, Limits, ModelOpt, Quiet, Speed, Store, grouped, option
from zsclip.core import progress
from zsclip.core.defaults import DEFAULT_MODEL
from zsclip.core.paths import check_output_dir
from zsclip.core.wording import plural
from zsclip.evaluate.report import write_comparison
from zsclip.evaluate.run import compare_templates
from zsclip.zeroshot.prompts import list_template_sets, load_templates

app = typer_app("List, show and compare prompt template sets.")


@app.command("list")
def prompts_list() -> None:
    """The shipped template sets: name, size and description."""

    for s in list_template_sets():
        echo(f"{s.name}\t{len(s.templates)}\t{s.description}")


@app.command("show")
def prompts_show(
    name: Annotated[str, typer.Argument(help="Template set name or file.")],
    classname: Annotated[str | None, typer.Option("--class", help="Expand the templates for this class.")] = None,
) -> None:
    """Print a template set, one template per line (expanded for --class)."""

    template_set = load_templates(name)
    for line in template_set.expand(classname) if classname else template_set.templates:
        echo(line)


@app.command("compare")
@grouped
def prompts_compare(
    dataset: Annotated[str, typer.Argument(help="Data set, as for zsclip eval.")] = "imagenet-v2",
    sets: Annotated[
        str | None, option(panel="Model", help="Comma-separated template sets (default: all shipped).")
    ] = None,
    per_template: Annotated[
        bool,
        option("--per-template", panel=OUTPUT, help="Also score every single template and a greedy best subset."),
    ] = False,
    spec: ModelOpt = DEFAULT_MODEL,
    report: Annotated[
        Path | None, option(panel=OUTPUT, help="Write compare.csv, compare.json, compare.png here.")
    ] = None,
    *,
    data: Data,
    limits: Limits,
    device: Device,
    backend: Backend,
    speed: Speed,
    store: Store,
    quiet: Quiet,
    cluster: Cluster,
) -> None:
    """Score several template sets on one data set, encoding the images once; best first."""

    names = [s.strip() for s in sets.split(",") if s.strip()] if sets else None
    for n in names or []:
        load_templates(n)
    backend.check()
    read, runtime = read_options(speed, limits, store), engine_options(cluster)
    if report:
        check_output_dir(report, "--report")
    data = eval_data(dataset, data)
    _compare(spec, data, names, per_template, report, device, backend, (read, runtime), quiet.quiet)


def _compare(spec, data, names, per_template, report, device, backend, reading, quiet: bool) -> None:
    read, runtime = reading

    show = progress.enabled(quiet)
    clip = backend.load(spec, device, quiet=quiet)
    embedded = embed_with_progress(clip, data, show, quiet, read, runtime)
    comparison = compare_templates(clip, embedded, names, per_template, read)
    print_table(
        f"{data.name} · {clip.spec} · {plural(len(embedded.paths), 'image')}",
        ["template set", "templates", "acc1", "acc5", "mean per-class recall"],
        [
            [
                r["set"],
                str(r["templates"]),
                f"{r['acc1']:.2%}",
                f"{r['acc5']:.2%}" if "acc5" in r else "-",
                f"{r['mean_per_class_recall']:.2%}",
            ]
            for r in comparison.rows
        ],
    )
    if per_template:
        print_table(
            "single templates",
            ["template", "acc1"],
            [[r["template"], f"{r['acc1']:.2%}"] for r in comparison.per_template],
        )
        print_table(
            "greedy subset (forward selection)",
            ["step", "added template", "ensemble acc1"],
            [[str(r["step"]), r["added"], f"{r['acc1']:.2%}"] for r in comparison.greedy],
            right=False,
        )
    if report:
        context = {
            "model": clip.spec,
            "fingerprint": clip.fingerprint,
            "dataset": data.name,
            "images": len(embedded.paths),
            "skipped": len(embedded.skipped),
        }
        write_comparison(comparison, report, context)
        if not quiet:
            progress.log(f"comparison written to {report}")
