"""Atomic file writes: a reader (or a crash) sees the old file or the whole new one, never half of one."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import stat
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", keep_on_error: bool = False, **kw) -> Iterator[IO]:
    """Write to a temporary file beside `path`; on success fsync and rename it over `path`, else delete it
    (or, with `keep_on_error`, put what was written in place all the same: a log of a run that failed).

    Missing parent folders are created. The file gets the mode of the file it replaces, else the mode a plain
    open() would give (0666 less the umask): mkstemp's private 0600 would hide reports and models from others."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_orphans(path)
    held, tmp = _held_temporary(path, _new_file)
    try:
        fd = os.open(tmp, os.O_WRONLY)
        with contextlib.suppress(OSError):  # a file system without modes (some mounts) keeps mkstemp's
            os.fchmod(fd, file_mode(path))
        f = os.fdopen(fd, mode, **kw)
        try:
            yield f
            f.flush()
            os.fsync(f.fileno())
            f.close()
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):  # a full disk fails the flush in close() again
                f.close()
            if keep_on_error:
                with contextlib.suppress(OSError):
                    os.replace(tmp, path)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    finally:
        os.close(held)  # only now may a sweep take it: the rename is done or the file is gone
    fsync_dir(path.parent)


@contextlib.contextmanager
def written_at(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside `path` for a tool that writes a file by name (ONNX Runtime, its quantizer): on
    success the file there is fsynced and renamed over `path`; in any case nothing is left at the temporary path."""
    path = Path(path)
    sweep_orphans(path)
    # The tool may delete and create its file: the held temporary is a folder around it.
    held, folder = _held_temporary(path, lambda prefix: tempfile.mkdtemp(dir=prefix.parent, prefix=prefix.name))
    tmp = Path(folder) / path.name
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        os.close(held)


# A temporary file (atomic_open) or folder (written_at): ".NAME.zsclip-tmp.RANDOM". Its writer holds flock(2) on it
# until it is renamed or gone; the kernel drops the lock when the writer dies, however it dies (kill -9 included),
# and the lock holds across PID namespaces, where a pid would not (zsclip.core.locks works the same way).
_TEMPORARY = re.compile(r"\..+\.zsclip-tmp\.[a-z0-9_]{8}")
_swept: set[str] = set()
_swept_lock = threading.Lock()


def _held_temporary(path: Path, make) -> tuple[int, str]:
    """(a descriptor holding the lock, the temporary's path) of a new temporary beside `path`, made by `make`."""
    while True:
        tmp = make(path.with_name(f".{path.name}.zsclip-tmp."))
        held = os.open(tmp, os.O_RDONLY)
        try:
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if same_file(held, tmp):  # a sweep may have taken it between its making and the lock
                return held, tmp
        except OSError:
            pass
        os.close(held)


def _new_file(prefix_path: Path) -> str:
    fd, tmp = tempfile.mkstemp(dir=prefix_path.parent, prefix=prefix_path.name)
    os.close(fd)
    return tmp


def sweep_orphans(path: Path) -> None:
    """Delete the temporaries in `path`'s folder whose writers died: no live writer holds their lock. Once per folder
    per process: a folder of 100,000 thumbnails is listed once, not at every write."""
    folder = os.path.abspath(path.parent)
    with _swept_lock:
        if folder in _swept:
            return
        _swept.add(folder)
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            if _TEMPORARY.fullmatch(entry.name):
                _remove_if_orphaned(entry.path)


def _remove_if_orphaned(tmp: str) -> None:
    try:
        held = os.open(tmp, os.O_RDONLY)
    except OSError:
        return
    try:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # OSError: a live writer holds it
        if same_file(held, tmp):
            if os.path.isdir(tmp):
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                os.unlink(tmp)
    except OSError:
        pass
    finally:
        os.close(held)


def same_file(fd: int, path: str | os.PathLike) -> bool:
    """Whether the open descriptor `fd` is the file now at `path` (not one removed or replaced since)."""
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def file_mode(path: str | os.PathLike) -> int:
    """The permission bits a new version of `path` should have: those of the file there now, else 0666 less
    the process umask (what open() gives a new file)."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return 0o666 & ~umask()


def umask() -> int:
    """The process umask, read without changing it where Linux shows it (os.umask can only set it, and setting
    it for a moment races with other threads creating files)."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    """UTF-8; a file name that is not UTF-8 (a surrogate-escaped str) keeps its own bytes."""
    with atomic_open(path, "w", encoding="utf-8", errors="surrogateescape", newline="") as f:
        f.write(text)


def fsync_dir(directory: str | os.PathLike) -> None:
    """Make a rename in `directory` durable (POSIX; a no-op where directories cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
