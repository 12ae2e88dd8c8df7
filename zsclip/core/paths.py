"""Places results go, checked before any work: a file or a folder that can be written (missing parents are made
when written), and paths compared by where they resolve. No third-party imports: every layer may use them."""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from zsclip.core.errors import UsageError, ZsclipError, is_disk_full

STDOUT = "-"  # `-o -`: the results go to stdout, as with no --output


def check_output_file(path: str | os.PathLike | None, what: str = "--output") -> Path | None:
    """Check that results can be written to the file `path` (missing parent folders are created when it is
    written); None for no path or `-` (stdout). Raises UsageError, naming `what` (the option), for a folder,
    a device or pipe, a parent that is a file, or a place that cannot be written (permissions, read-only
    file system)."""
    if path is None or str(path) == STDOUT:
        return None
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{what} {path}: is a folder; give a file name, e.g. {path / 'results.csv'}")
    if path.exists() and not path.is_file():
        raise UsageError(f"{what} {path}: not a regular file; give a file name (or - for stdout)")
    _check_writable(path.parent, what, path)
    return path


def check_output_dir(path: str | os.PathLike, what: str) -> Path:
    """Check that `path` is a folder that files can be written into, or can be created (it is, with its
    parents, when written); raises UsageError naming `what` (the option) otherwise."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{what} {path}: is a file, not a folder; give a folder (it is created if missing)")
    _check_writable(path, what, path)
    return path


def _check_writable(directory: Path, what: str, path: Path) -> None:
    """`directory` or, if missing, its nearest existing ancestor (where it would be created) takes a new file."""
    existing = directory
    while not existing.exists():
        if existing.is_symlink():
            raise UsageError(f"{what} {path}: {existing} is a broken symbolic link")
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"{what} {path}: {existing} is a file, not a folder")
    try:  # a real write: access() says yes to root on a read-only mount's files and knows no ACLs or quotas
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".zsclip-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UsageError(f"{what} {path}: cannot write in {existing} ({_reason(exc)})") from exc


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


@contextlib.contextmanager
def writing(path: str | os.PathLike, what: str) -> Iterator[None]:
    """Turn a failed write of a result file into a one-line ZsclipError naming it (a disk that fills up or a
    location that changed after the check), instead of a traceback."""
    try:
        yield
    except OSError as exc:
        if is_disk_full(exc):
            raise ZsclipError(f"{what} {path}: the disk is full ({_reason(exc)}); free space and run again") from exc
        where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(path) else ""
        raise ZsclipError(f"{what} {path}: cannot write{where}: {_reason(exc)}") from exc


def resolved(path: str, cwd: str | None = None) -> str:
    """`path` as an absolute path with its folders' symbolic links resolved, so `./imgs/a.jpg`, `imgs/a.jpg`,
    the same from another working directory, and the same through a linked folder are one file. The file name
    itself is kept (a link to an image is its own entry). Folders are resolved once each (cached)."""
    head, tail = os.path.split(os.path.normpath(os.path.join(cwd or os.getcwd(), path)))
    return os.path.join(_real_dir(head), tail)


@functools.lru_cache(maxsize=4096)
def _real_dir(directory: str) -> str:
    return os.path.realpath(directory)
