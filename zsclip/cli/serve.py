"""`zsclip serve`: the folders as a local web page (zsclip.serve)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Annotated

import typer

from zsclip.cli.common import model_for_classifier, read_options
from zsclip.cli.options import (
    INPUT,
    OUTPUT,
    Backend,
    ClassifierOpt,
    Device,
    Limits,
    ModelOpt,
    Speed,
    Walk,
    grouped,
    option,
)
from zsclip.core import progress
from zsclip.core.defaults import DEFAULT_MODEL
from zsclip.core.errors import UsageError, ZsclipError
from zsclip.fewshot import load_classifier
from zsclip.pipeline.sources import check_sources
from zsclip.serve.guard import Guard, is_loopback
from zsclip.serve.library import Library
from zsclip.store.cache import Cache

PIP = "pip install 'zsclip[serve]'"


@grouped
def serve_cmd(
    paths: Annotated[list[str], typer.Argument(help="Folders (or images) to serve.", show_default=False)],
    spec: ModelOpt = DEFAULT_MODEL,
    host: Annotated[
        str,
        option(panel=OUTPUT, help="Address to listen on; any but a loopback address needs the printed token."),
    ] = "127.0.0.1",
    port: Annotated[int, option(panel=OUTPUT, help="Port (0: any free port).")] = 8765,
    open_browser: Annotated[
        bool, option("--open", panel=OUTPUT, help="Open the page in the browser.", env_name="open")
    ] = False,
    reports: Annotated[
        Path | None, option(panel=INPUT, help="Serve eval reports and leaderboards under DIR at /reports/.")
    ] = None,
    sort_into: Annotated[
        Path | None, option(panel=OUTPUT, help="The folder the page previews a sort into (and sorts into).")
    ] = None,
    allow_write: Annotated[
        bool, option("--allow-write", panel=OUTPUT, help="Let the page sort into --sort-into (with the token).")
    ] = False,
    rescan: Annotated[
        float, option(panel=INPUT, help="Seconds between looks for new, changed and deleted files (0: on request).")
    ] = 300.0,
    max_upload_mb: Annotated[int, option(panel=INPUT, help="Largest image accepted as a search upload.")] = 20,
    classifier_file: ClassifierOpt = None,
    token: Annotated[
        str | None,
        option(panel=OUTPUT, help="The access token (default: a new random one each start).", show_default=False),
    ] = None,
    no_token: Annotated[
        bool,
        option(
            "--no-token",
            panel=OUTPUT,
            help="No token on a single-user machine (loopback only): anyone who can reach the port, any user of "
            "this machine included, can read the page and, with --allow-write, sort. docs/serve.md.",
        ),
    ] = False,
    *,
    walk: Walk,
    limits: Limits,
    device: Device,
    backend: Backend,
    speed: Speed,
) -> None:
    """A local web page to search, classify and browse the images under PATH (Ctrl-C stops it).

    Indexes PATH in the background through the same store as `zsclip index` (stored files cost nothing), then
    keeps the model and the vectors in memory: search by text (+term/-term), by an image (drop one, or "more like
    this"), classify by class names typed in the page, download the records, preview a --sort-into plan."""
    for name in ("starlette", "uvicorn"):
        if importlib.util.find_spec(name) is None:
            raise ZsclipError(f"zsclip serve needs {name}, which is not installed: {PIP}")
    if not 0 <= port <= 65535:
        raise UsageError(f"--port {port}: use 0 to 65535")
    if rescan < 0 or max_upload_mb < 1:
        raise UsageError("--rescan must be 0 or more seconds, --max-upload-mb at least 1")
    if no_token and (token is not None or not is_loopback(host)):
        raise UsageError("--no-token: only on a loopback --host (127.0.0.1, ::1), and without --token")
    if allow_write and sort_into is None:
        raise UsageError("--allow-write lets the page sort into --sort-into DIR: give --sort-into too")
    if reports is not None and not reports.is_dir():
        raise UsageError(f"--reports {reports}: not a folder")
    backend.check()
    spec = model_for_classifier(spec, classifier_file)

    read = read_options(speed, limits, walk=walk)
    sources = check_sources(paths, walk.recursive)
    site = {
        "classifier": classifier_file,
        "reports": reports,
        "sort_into": sort_into,
        "allow_write": allow_write,
        "max_upload": max_upload_mb << 20,
    }
    access = (token, no_token)
    _serve(sources, spec, host, port, open_browser, rescan, access, device, backend, read, site)


def _serve(sources, spec, host, port, open_browser, rescan, access, device, backend, read, site: dict) -> None:
    import socket

    import uvicorn

    from zsclip.serve.app import make_app  # heavy: starlette, only when serving

    cache = Cache()
    clip = backend.load(spec, device, cache, False, sources, lazy=False)
    if site["classifier"] is not None:
        site["classifier"] = load_classifier(site["classifier"], clip)
    library = Library(clip, [p for p, _ in sources], str(cache.directory), read)
    token, no_token = access
    guard = Guard(host, token, open_access=no_token)
    app = make_app(library, guard, **site)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        message = f"--host {host} --port {port}: cannot listen there ({e.strerror}); try another --port"
        raise UsageError(message) from None
    sock.listen(2048)  # connections wait in the backlog until uvicorn accepts them
    port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    # Printed once: opening it sets the cookie (the page never holds the token); API clients send
    # `Authorization: token TOKEN`.
    url = f"http://{shown}:{port}/" + ("" if guard.open else f"?token={guard.token}")
    progress.log(f"serving {', '.join(library.roots)} with {clip.spec} at {url}")
    if guard.open:
        progress.log("warning: --no-token: any user of this machine can open the page")
    library.start(rescan or None)
    if open_browser:
        import webbrowser

        try:
            opened = webbrowser.open(url)
        except webbrowser.Error:
            opened = False
        if not opened:
            progress.log("--open: no browser could be opened here; open the address above yourself")
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=2)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        library.stop()
