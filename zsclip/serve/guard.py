"""What `zsclip serve` lets through: files under the served folders only, and the token.

A path from a request is served only if it names a regular file whose real path (every symbolic link resolved)
lies inside one of the real served roots; NUL bytes, backslashes (a Windows separator), relative paths and `..`
never get that far. The token: bound to a loopback address, reading needs none but the Host header must be a
loopback name (a page on another site that rebinds its DNS name to 127.0.0.1 gets nothing); bound to any other
address, every request needs the token. Actions that write (sorting) need it always.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets

LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}


class Refused(Exception):
    """A request the guard turns away: `status` is the HTTP status, the message says why."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def new_token() -> str:
    return secrets.token_urlsafe(24)


def contained(path: str, roots: list[str]) -> str:
    """The real path of `path` if it is a regular file inside a root, else Refused (404 for a file that is not
    there or not served: the answer does not tell which)."""
    if not isinstance(path, str) or not path:
        raise Refused("path: missing")
    if "\0" in path or "\\" in path:
        raise Refused("path: NUL bytes and backslashes are not allowed")
    if not os.path.isabs(path) or ".." in path.split("/"):
        raise Refused("path: give the absolute path a result shows")
    real = os.path.realpath(path)
    for root in roots:
        if real == root or real.startswith(root.rstrip("/") + "/"):
            if os.path.isfile(real):
                return real
            break
    raise Refused(f"{path}: not a served file", 404)


def host_name(header: str) -> str:
    """The name of a Host header ("name", "name:port", "[v6]" or "[v6]:port"); anything else gives ""."""
    import re

    found = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[^:\[\]]+)(:\d+)?", header)
    return found.group(1) if found else ""


class Guard:
    def __init__(self, host: str, token: str | None = None):
        self.loopback = is_loopback(host)
        self.token = token or new_token()

    def check(self, host_header: str, given: str | None, write: bool = False) -> None:
        """Raise Refused unless a request with this Host header and token may go on."""
        ok = given is not None and hmac.compare_digest(given.encode(), self.token.encode())
        if self.loopback:
            if not is_loopback(host_name(host_header)):
                raise Refused(f"Host {host_header!r}: this server answers to localhost only", 403)
            if write and not ok:
                raise Refused("this action writes files: it needs the token (the URL zsclip serve printed)", 403)
            return
        if not ok:
            raise Refused("a token is needed: open the URL zsclip serve printed (it ends in ?token=...)", 403)
