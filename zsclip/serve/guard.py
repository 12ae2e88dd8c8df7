"""What `zsclip serve` lets through: files under the served folders only, and requests that carry the token.

A path from a request is served only if it names a regular file whose real path (every symbolic link resolved)
lies inside one of the real served roots; NUL bytes, backslashes (a Windows separator), relative paths and `..`
never get that far.

The token (Jupyter Server's model): every request needs it, the page included, on loopback too (another user of
the machine can reach 127.0.0.1). zsclip serve prints it once, in a URL: opening `/?token=TOKEN` sets an HttpOnly
cookie and redirects to the same address without it, so it never stays in a page, the history, a copied link or a
Referer. API clients send `Authorization: token TOKEN`. A request that changes something (POST) authenticated by
the cookie must come from the page itself: its Origin is this server's (another port of the same host is another
origin, though the same site, so the cookie alone would be sent from it), and a form or text/plain body, what a
page elsewhere can post without asking, is refused. On loopback the Host header must be a loopback name (a page
whose DNS name is rebound to 127.0.0.1 gets nothing). `--no-token` opts out of the token on a single-user
machine, loopback only; the Origin rule still holds.
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


# Bodies a page on any site may POST without a CORS preflight: never accepted by the API.
SIMPLE_BODIES = ("application/x-www-form-urlencoded", "multipart/form-data", "text/plain")


class Guard:
    def __init__(self, host: str, token: str | None = None, open_access: bool = False):
        self.loopback = is_loopback(host)
        self.token = token or new_token()
        self.open = open_access  # --no-token: a single-user machine, loopback only (checked by the CLI)

    def valid(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.token.encode())

    def check(
        self,
        method: str,
        host_header: str,
        authorization: str | None,
        cookie: str | None,
        origin: str | None = None,
        fetch_site: str | None = None,
        content_type: str | None = None,
    ) -> None:
        """Raise Refused unless a request with these headers may go on (see the module docstring)."""
        if self.loopback and not is_loopback(host_name(host_header)):
            raise Refused(f"Host {host_header!r}: this server answers to localhost only", 403)
        by_header = self.valid(bearer(authorization))
        if not (by_header or self.valid(cookie) or self.open):
            raise Refused(
                "a token is needed: open the URL zsclip serve printed (it ends in ?token=...), or send "
                "'Authorization: token TOKEN'",
                403,
            )
        if method in ("GET", "HEAD", "OPTIONS"):
            return
        kind = (content_type or "").split(";")[0].strip().lower()
        if kind in SIMPLE_BODIES:
            raise Refused(f"Content-Type {kind}: the API takes no form or text bodies", 415)
        if by_header:  # no page elsewhere can set this header without a CORS preflight, which is never granted
            return
        if origin != f"http://{host_header}" or fetch_site not in (None, "same-origin"):
            raise Refused(f"a change from another page (Origin {origin or 'none'}) is refused", 403)


def bearer(header: str | None) -> str | None:
    """The token of an `Authorization: token TOKEN` (Jupyter's form) or `Bearer TOKEN` header."""
    scheme, _, value = (header or "").strip().partition(" ")
    return value.strip() if scheme.lower() in ("token", "bearer") and value.strip() else None
