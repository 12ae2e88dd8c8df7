"""The `zsclip` command group: every error a user can cause ends as one line and an exit code, and the commands are
imported only when one runs (or its help is asked for), so `zsclip --help` and usage errors answer at once.

Light on purpose: this module and the root group import click, typer and zsclip.core only."""

from __future__ import annotations

import difflib
import errno
import importlib
import sys
from typing import ClassVar

import click
import typer
from typer.core import TyperCommand, TyperGroup

from zsclip.core import progress
from zsclip.core.errors import ZsclipError

# Typer >= 0.29 vendors its own click; older releases raise click's exceptions.
_CLICK_ERRORS = (click.ClickException, click.exceptions.Abort, getattr(typer, "TyperException", click.ClickException))


class Group(TyperGroup):
    """Every error a user can cause ends as one line on stderr and an exit code; never a traceback."""

    def invoke(self, ctx):
        # Typer turns Ctrl-C into a silent Exit(130) before main() below could see it: say so here.
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            fail("interrupted", 130)

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _CLICK_ERRORS as exc:
            if not hasattr(exc, "format_message"):  # Abort
                fail("interrupted", 130)
            code = getattr(exc, "exit_code", 1)
            ctx = getattr(exc, "ctx", None)
            message = exc.format_message()
            if not message and ctx is not None:  # a group run without a command: its help was printed
                sys.exit(code)
            where = f" (see '{ctx.command_path} --help')" if code == 2 and ctx else ""
            fail(f"{message}{where}", code)
        except ZsclipError as exc:
            fail(str(exc), exc.exit_code)
        except MemoryError:
            fail("out of memory: try a smaller --batch-size or fewer --workers (finished output is kept)", 1)
        except OSError as exc:  # a folder zsclip must write to that cannot take it (read-only, full, no access)
            if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT):
                raise

            where = exc.filename or "a file"
            cached = str(where).startswith(str(_cache_dir()))
            hint = "; set ZSCLIP_CACHE_DIR to a writable folder" if cached else "; choose another folder"
            fail(f"cannot write {where}: {exc.strerror}{hint} (finished output is kept)", 1)
        except RuntimeError as exc:  # torch.OutOfMemoryError (CUDA) and CPU allocator failures
            if "out of memory" not in str(exc).lower():
                raise
            first = str(exc).splitlines()[0][:200]
            fail(f"out of memory ({first}): try a smaller --batch-size (finished output is kept)", 1)
        except KeyboardInterrupt:
            fail("interrupted", 130)
        sys.exit(rv if isinstance(rv, int) else 0)


def fail(message: str, code: int) -> None:
    progress.log(f"error: {message}")
    sys.exit(code)


def typer_app(help: str) -> typer.Typer:
    return typer.Typer(
        cls=Group,
        help=help,
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
        rich_markup_mode="markdown",
    )


def _cache_dir():
    from zsclip.store.cache import cache_dir  # sqlite and platformdirs: only for this message

    return cache_dir()


class LazyGroup(Group):
    """The root group: its commands are a table (name -> module, attribute, one-line help) loaded on first use.
    `zsclip --help` lists the table; `tests/test_cli_layout.py` checks each line against the command's own help."""

    commands_table: ClassVar[dict[str, tuple[str, str, str]]] = {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands_table)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.commands_table:
            return None
        module, attr, short = self.commands_table[name]
        if getattr(self, "_listing", False):  # the root's help: the table's line, nothing imported
            return TyperCommand(name=name, help=short, short_help=short)
        found = getattr(importlib.import_module(f"zsclip.cli.{module}"), attr)
        if isinstance(found, typer.Typer):
            command = typer.main.get_group(found)  # a group even with one command (data shapes)
        else:
            single = typer_app(short)
            single.command(name)(found)
            command = typer.main.get_command(single)
        command.name = name
        return command

    def resolve_command(self, ctx, args):
        name = args[0] if args else ""
        if name and not name.startswith("-") and name not in self.commands_table:  # the suggestion click made
            close = difflib.get_close_matches(name, list(self.commands_table), n=2, cutoff=0.6)
            hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            ctx.fail(f"No such command {name!r}.{hint}")
        return super().resolve_command(ctx, args)

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False
