"""One writer at a time for a folder or file that a run writes into (a sort folder, an --output file, a report).

A lock is a small file holding the holder's pid, locked with flock(2): the kernel releases it when the holder
exits, however it exits (kill -9 included), so a dead holder's lock is simply taken over. A second writer is
refused at once with one line naming the holder, rather than waiting or interleaving its writes with the first.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path

from zsclip.core.atomic import same_file
from zsclip.core.errors import UsageError


class Lock:
    """An exclusive lock on `path` (the lock file, created if missing); `what` names the thing it guards in the
    refusal. Use as a context manager or call acquire() / release()."""

    def __init__(self, path: str | os.PathLike, what: str):
        self.path = Path(path)
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> Lock:
        if self._fd is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(10):  # the file can be removed by a holder releasing it between our open and flock
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                holder = _holder(self.path)
                who = f" (pid {holder})" if holder else ""
                raise UsageError(
                    f"{self.what} is in use by another zsclip process{who}; wait for it to finish, or use another "
                    "folder or file"
                ) from None
            if same_file(fd, self.path):
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                self._fd = fd
                return self
            os.close(fd)  # locked a file that was just removed: lock the one now at the path
        raise UsageError(f"{self.what}: cannot take the lock {self.path}")

    def acquire_waiting(self, timeout: float = 60.0) -> Lock:
        """Wait up to `timeout` seconds for the lock (for a short critical section, such as a commit, that a second
        process should queue behind rather than be refused from)."""
        import time

        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.acquire()
            except UsageError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()  # while still holding it: a waiter that opened the old file retries (see acquire)
        with contextlib.suppress(OSError):
            os.close(self._fd)
        self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> Lock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _holder(path: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int(path.read_text(encoding="ascii").split()[0])
    return None


def probe(path: str | os.PathLike, what: str) -> None:
    """Refuse now (UsageError) if another process holds the lock: a check before a model loads. Taking the lock
    for real comes later; this only saves the wait when the answer is already no."""
    if Path(path).exists():
        with Lock(path, what):
            pass
