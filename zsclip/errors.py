"""Errors a user can act on. The CLI prints them as one line and exits with `exit_code`."""


class ZsclipError(Exception):
    """A run that failed for a reason outside zsclip's control (missing weights, unreadable data): exit 1."""

    exit_code = 1


class UsageError(ZsclipError):
    """The user asked for something that cannot work (bad option, unknown name, empty class list): exit 2."""

    exit_code = 2
