"""Errors a user can act on. The CLI prints them as one line and exits with `exit_code`."""


class ZsclipError(Exception):
    """A run that failed for a reason outside zsclip's control (missing weights, unreadable data): exit 1."""

    exit_code = 1

    def __str__(self) -> str:
        # Always one line, even when it quotes user input that holds line breaks (a path, a spec).
        text = super().__str__()
        lines = text.splitlines()
        return " ".join(lines) if len(lines) > 1 else text


class UsageError(ZsclipError):
    """The user asked for something that cannot work (bad option, unknown name, empty class list): exit 2."""

    exit_code = 2


_FULL_ERRNOS = {28, 27, 122}  # ENOSPC, EFBIG (a file-size limit), EDQUOT


def is_disk_full(exc: BaseException) -> bool:
    """Whether a write failed because the disk, a quota or a file-size limit is full (OSError), or SQLite could
    not write its file (SQLITE_FULL, or SQLITE_IOERR, which is what a file-size limit gives)."""
    if isinstance(exc, OSError):
        return exc.errno in _FULL_ERRNOS
    return "disk is full" in str(exc) or "disk I/O error" in str(exc)
