"""docs/cli.md, generated from the commands' own `--help` (as simonw/llm does with cog), so the reference never
drifts from the code: `python -m zsclip.cli.docs > docs/cli.md` writes it, and a test checks it is current."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import click
import typer

from zsclip.cli import app

WIDTH = 100
HEADER = """# zsclip command reference

Every command's `--help`, generated from the code (`python -m zsclip.cli.docs > docs/cli.md`; a test fails when
this page and the code disagree). Every option can also be set by an environment variable `ZSCLIP_<OPTION>`
(shown with each option). Results go to stdout; progress bars, skipped files and summaries to stderr. Exit codes:
`0` success (also when bad files were skipped; stderr says how many), `1` a failed run, `2` a usage error.
"""


def commands(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every command path of the CLI, in the order `zsclip --help` lists them."""
    for name in group.list_commands(click.Context(group)):
        command = group.get_command(click.Context(group), name)
        if isinstance(command, click.Group):
            yield (*path, name)
            yield from commands(command, (*path, name))
        else:
            yield (*path, name)


@contextlib.contextmanager
def _plain_help() -> Iterator[None]:
    """Help at a fixed width and without colour, whatever the terminal."""
    import typer.rich_utils as rich_utils

    saved = rich_utils.MAX_WIDTH, rich_utils.FORCE_TERMINAL, rich_utils.COLOR_SYSTEM
    rich_utils.MAX_WIDTH, rich_utils.FORCE_TERMINAL, rich_utils.COLOR_SYSTEM = WIDTH, False, None
    try:
        yield
    finally:
        rich_utils.MAX_WIDTH, rich_utils.FORCE_TERMINAL, rich_utils.COLOR_SYSTEM = saved


def reference() -> str:
    """docs/cli.md's text."""
    from typer.testing import CliRunner

    root = typer.main.get_command(app)
    sections = [HEADER]
    env = {k: "" for k in os.environ if k.startswith("ZSCLIP_")}  # an exported variable would show as a default
    with _plain_help():
        for path in [(), *commands(root)]:
            result = CliRunner().invoke(app, [*path, "--help"], prog_name="zsclip", env=env, color=False)
            text = "\n".join(line.rstrip() for line in result.output.strip("\n").splitlines())
            title = " ".join(("zsclip", *path))
            sections.append(f"## `{title}`\n\n```text\n{text}\n```\n")
    return "\n".join(sections)


if __name__ == "__main__":
    print(reference(), end="")
