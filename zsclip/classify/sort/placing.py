"""Putting one file in place, whole: a copy is written to a hidden temporary name beside its destination and then
linked or renamed into place; a move on the same file system is a rename (an image is at its old name or its new
one, never both, never neither); across file systems it is copy + fsync + rename, and the source is removed only
after that. A name taken meanwhile is never overwritten (FileExistsError)."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import uuid
from pathlib import Path

from zsclip.core import atomic

TMP_PREFIX = ".zsclip-"
TMP_SUFFIX = ".tmp"


def hook(point: str) -> None:
    """Called between the steps of placing a file ("row", "copied", "placed"); tests replace it to kill the
    process in each crash window."""


def same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def commit(src: str | os.PathLike, dest: Path) -> None:
    """Give `src` the name `dest` unless that name exists (FileExistsError): a hard link fails on an existing
    name where rename would replace it; file systems without hard links get an existence check and a rename."""
    try:
        os.link(src, dest, follow_symlinks=False)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno == errno.EXDEV:
            raise
        if os.path.lexists(dest):
            raise FileExistsError(errno.EEXIST, "exists", str(dest)) from None
        os.rename(src, dest)
        return
    os.unlink(src)


def via_temporary(dest: Path, write, durable: bool = False) -> None:
    """Write with `write(tmp)` to a hidden name beside `dest`, then give it the name `dest`; `durable`: the
    file and its name are on disk (fsynced) before this returns."""
    tmp = dest.parent / f"{TMP_PREFIX}{uuid.uuid4().hex[:12]}{TMP_SUFFIX}"
    try:
        write(tmp)
        if durable:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        hook("copied")
        commit(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if durable:
        atomic.fsync_dir(dest.parent)
    hook("placed")


def move(source: str, dest: Path) -> None:
    """A rename on the same file system (atomic: the image has its old name or its new one); across file
    systems a copy made durable before the source is removed. A symbolic link with a relative target would point
    elsewhere from its new folder: it is placed as a link to its target's absolute path instead."""
    if os.path.islink(source) and not os.path.isabs(os.readlink(source)):
        target = os.path.realpath(source)
        via_temporary(dest, lambda tmp: os.symlink(target, tmp))
        os.unlink(source)
        return
    try:
        commit(source, dest)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        via_temporary(dest, lambda tmp: shutil.copy2(source, tmp), durable=True)
        os.unlink(source)
        return
    hook("placed")


def copy(source: str, dest: Path) -> None:
    via_temporary(dest, lambda tmp: shutil.copy2(source, tmp))


def link(source: str, dest: Path) -> None:
    via_temporary(dest, lambda tmp: os.symlink(source, tmp))


PLACE = {"copy": copy, "link": link, "move": move}


def clean_temporary(root: Path) -> None:
    """Delete the temporary files a killed sort left in DIR's label folders."""
    with contextlib.suppress(OSError):
        for folder in root.iterdir():
            if folder.is_dir() and not folder.is_symlink():
                for tmp in folder.glob(f"{TMP_PREFIX}*{TMP_SUFFIX}"):
                    with contextlib.suppress(OSError):
                        tmp.unlink()
