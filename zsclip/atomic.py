"""Atomic file writes: a reader (or a crash) sees the old file or the whole new one, never half of one."""

from __future__ import annotations

import contextlib
import os
import re
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
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.pid{os.getpid()}.", suffix=".tmp")
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
    fsync_dir(path.parent)


@contextlib.contextmanager
def written_at(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside `path` for a tool that writes a file by name (ONNX Runtime, its quantizer): on
    success the file there is fsynced and renamed over `path`; in any case nothing is left at the temporary path."""
    path = Path(path)
    sweep_orphans(path)
    tmp = path.with_name(f".{path.name}.pid{os.getpid()}.tmp")
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


# A temporary file of atomic_open or written_at: ".NAME.pid<PID>[.RANDOM].tmp".
_TEMPORARY = re.compile(r"\..+\.pid(\d+)(\.[A-Za-z0-9_]+)?\.tmp")
_swept: set[str] = set()
_swept_lock = threading.Lock()


def sweep_orphans(path: Path) -> None:
    """Delete the temporary files in `path`'s folder left by writers that died (kill -9 never runs their cleanup);
    the writer's pid is in each name, and a live writer's file is left alone. Once per folder per process: a folder
    of 100,000 thumbnails is listed once, not at every write."""
    folder = os.path.abspath(path.parent)
    with _swept_lock:
        if folder in _swept:
            return
        _swept.add(folder)
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            found = _TEMPORARY.fullmatch(entry.name)
            if found and not _alive(int(found.group(1))):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process
        return True
    return True


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
