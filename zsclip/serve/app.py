"""The web app of `zsclip serve`: the page, and the JSON API under /api/ that the page itself uses.

Starlette (with uvicorn), not FastAPI: measured here, `import starlette.applications` takes 0.28 s and `import
fastapi` 0.77 s, and FastAPI's interactive /docs page loads Swagger UI from a CDN, which an offline laptop cannot
reach; the API is small enough to describe by hand (/api/openapi.json, docs/serve.md).

Every handler's errors become a 4xx with a one-line message (`{"error": ...}`); an unexpected one a 500 with one
line, never a traceback.
"""

from __future__ import annotations

import functools
import io
import os
import secrets
import sys
import tempfile
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from zsclip.classify.output.render import make_writer
from zsclip.classify.predict import check_options, predict
from zsclip.classify.sort import Sorter
from zsclip.core.errors import UsageError, ZsclipError
from zsclip.photos.filters import PhotoFilter
from zsclip.pipeline.images import SkipFile
from zsclip.pipeline.thumbs import thumbnail
from zsclip.serve.guard import Guard, Refused, contained
from zsclip.serve.openapi import OPENAPI

if TYPE_CHECKING:
    from zsclip.serve.library import Library
    from zsclip.zeroshot.classifier import Classifier

MAX_TOP = 500
TOKEN_COOKIE = "zsclip_token"


def cookie_name(host_header: str) -> str:
    """The token cookie of the server at this Host: browsers keep cookies per host, not per port, so two servers on
    two ports would overwrite each other's cookie under one name."""
    port = host_header.rsplit(":", 1)[1] if host_header.rsplit(":", 1)[-1].isdigit() and ":" in host_header else "80"
    return f"{TOKEN_COOKIE}_{port}"


def make_app(
    library: Library,
    guard: Guard,
    *,
    reports: Path | None = None,
    sort_into: Path | None = None,
    allow_write: bool = False,
    max_upload: int = 20 * 2**20,
    thumbs: Path | None = None,
    classifier: Classifier | None = None,
) -> Starlette:
    """The app; `classifier` (a few-shot one from zsclip fit) answers a classify request without class names."""
    thumbs = thumbs or Path(library.cache.directory) / "thumbs"
    page = resources.files(__package__).joinpath("page.html").read_text(encoding="utf-8")

    async def index(request: Request) -> Response:
        settings = {"sortInto": str(sort_into) if sort_into else None, "write": allow_write}  # never the token
        nonce = secrets.token_urlsafe(16)
        html = page.replace("/*SETTINGS*/{}", _json(settings)).replace("<script>", f'<script nonce="{nonce}">')
        return HTMLResponse(html, headers={"Cache-Control": "no-store", "Content-Security-Policy": _page_policy(nonce)})

    @api
    def status(request: Request) -> Response:
        fitted = classifier.labels if classifier is not None else None
        return JSONResponse(
            {**library.status(), "reports": reports is not None, "write": allow_write, "classifier": fitted}
        )

    @api
    def search(request: Request) -> Response:
        top, offset = _ints(request, top=24, offset=0)
        like = request.query_params.get("like")
        if like is not None:
            contained(like, library.roots)
            q = library.query(like=like)
        else:
            text = request.query_params.get("q", "")
            if not text.strip():
                raise UsageError("q: give a text to search for (or like=PATH for images like one)")
            q = library.query(text)
        results = library.search(q, top, offset, _where(request))
        return JSONResponse({"results": results, "images": len(library.rows)})

    async def search_image(request: Request) -> Response:
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > max_upload:
                return _error(f"the uploaded image is over the limit of {max_upload // 2**20} MB", 413)
        if not data:
            return _error("no image in the request body (POST the file's bytes)", 400)
        return await _search_upload(request, bytes(data))

    @api
    def _search_upload(request: Request, data: bytes) -> Response:
        top, offset = _ints(request, top=24, offset=0)
        with tempfile.TemporaryDirectory(prefix="zsclip-upload-") as tmp:
            path = os.path.join(tmp, "upload")
            with open(path, "wb") as f:
                f.write(data)
            q = library.query(image_file=path)
        results = library.search(q, top, offset, _where(request))
        return JSONResponse({"results": results, "images": len(library.rows)})

    @api
    def classify(request: Request) -> Response:
        clf, paths, probs = _classified(request)
        top = probs.argmax(-1) if len(paths) else []
        return JSONResponse({
            "labels": clf.labels,
            "paths": paths,
            "label": [int(i) for i in top],
            "prob": [round(float(probs[i, j]), 6) for i, j in enumerate(top)],
        })  # fmt: skip

    @api
    def records(request: Request) -> Response:

        fmt = request.query_params.get("format", "csv")
        if fmt not in ("csv", "jsonl"):
            raise UsageError(f"format={fmt}: use csv or jsonl")
        clf, paths, probs = _classified(request)
        threshold = _threshold(request)
        k = check_options(clf, None, threshold)
        out = io.StringIO()
        writer = make_writer(fmt, out, k)
        for pred in predict(paths, probs, clf, k, threshold):
            writer.write(pred)
        writer.close()
        kind = "text/csv" if fmt == "csv" else "application/jsonl"
        disposition = f'attachment; filename="zsclip-classify.{fmt}"'
        return Response(out.getvalue(), media_type=kind, headers={"Content-Disposition": disposition})

    @api
    def sort_plan(request: Request) -> Response:
        return JSONResponse(_sort(request, dry_run=True))

    @api
    def sort_run(request: Request) -> Response:
        if not allow_write:
            raise Refused("sorting from the page needs zsclip serve --allow-write", 403)
        return JSONResponse(_sort(request, dry_run=False))

    def _sort(request: Request, dry_run: bool) -> dict:

        if sort_into is None:
            raise UsageError("no sort folder: start zsclip serve with --sort-into DIR")
        clf, paths, probs = _classified(request)
        threshold = _threshold(request)
        mode = request.query_params.get("mode", "copy")
        if mode not in ("copy", "move", "link"):
            raise UsageError(f"mode={mode}: use copy, move or link")
        plan = io.StringIO()
        settings = {"labels": clf.labels, "threshold": threshold}
        rows = []
        again = (Path(sort_into) / "manifest.csv").exists()  # a later sort continues the folder's manifest
        kind = {"dry_run": dry_run, "resume": again, "labels": clf.labels, "settings": settings, "plan": plan}
        kind["sources"] = library.sources  # a move never takes a file from a folder linked in from outside
        try:
            sorter = Sorter(sort_into, mode, **kind)
        except UsageError as e:
            if not str(e).startswith("--resume:"):
                raise
            # The CLI's words (--resume) mean nothing in the page: say what the page can change.
            raise UsageError(
                f"{sort_into} was sorted before with other class names, threshold or mode: use the same ones, or "
                "start zsclip serve with another --sort-into folder"
            ) from None
        with sorter:
            for pred in predict(paths, probs, clf, check_options(clf, None, threshold), threshold):
                rows.append({"path": pred.path, "label": pred.label, "to": str(sorter.add(pred) or "")})
            summary = sorter.summary()
        return {"dry_run": dry_run, "mode": mode, "into": str(sort_into), "rows": rows, "summary": summary}

    def _classified(request: Request):
        names = [c.strip() for c in request.query_params.get("classes", "").split(",") if c.strip()]
        if not names and classifier is not None:
            clf = classifier
        elif len(names) < 2:
            raise UsageError("classes: give at least two class names, separated by commas")
        else:
            clf = library.classifier(names, request.query_params.get("templates", "default"))
        paths, probs = library.classify(clf)
        return clf, paths, probs

    @api
    def rescan(request: Request) -> Response:
        library.request_scan()
        return JSONResponse({"scanning": True})

    @api
    def thumb(request: Request) -> Response:
        real = contained(request.query_params.get("path", ""), library.roots)
        try:
            data = thumbnail(real, thumbs, library.read.max_pixels)
        except SkipFile as e:
            raise Refused(f"{request.query_params['path']}: {e}", 422) from None
        return Response(data, media_type="image/webp", headers={"Cache-Control": "private, max-age=3600"})

    @api
    def image(request: Request) -> Response:
        path = request.query_params.get("path", "")
        real = contained(path, library.roots)
        if library.row_of(path) is None and library.row_of(real) is None:
            raise Refused(f"{path}: not an indexed image", 404)
        return _image_response(real, path)

    async def openapi(request: Request) -> Response:
        return JSONResponse(OPENAPI)

    routes = [
        Route("/", index),
        Route("/api/status", status),
        Route("/api/search", search),
        Route("/api/search/image", search_image, methods=["POST"]),
        Route("/api/classify", classify),
        Route("/api/classify/records", records),
        Route("/api/sort/plan", sort_plan),
        Route("/api/sort", sort_run, methods=["POST"]),
        Route("/api/rescan", rescan, methods=["POST"]),
        Route("/api/thumb", thumb),
        Route("/api/image", image),
        Route("/api/openapi.json", openapi),
    ]
    if reports is not None:
        routes.append(Mount("/reports", StaticFiles(directory=str(reports), html=True)))
    app = Starlette(routes=routes)
    app.add_middleware(GuardMiddleware, guard=guard)
    return app


class GuardMiddleware:
    """Every HTTP request passes zsclip.serve.guard first. `GET /?token=TOKEN` (the URL zsclip serve prints) sets
    the HttpOnly cookie and redirects to the same address without the token. Every answer says nosniff; the files
    (images, thumbnails, reports) come with a sandbox policy, so one that is also HTML runs nothing here."""

    def __init__(self, app, guard: Guard):
        self.app, self.guard = app, guard

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request = Request(scope)
        headers = request.headers
        login = scope["path"] == "/" and scope["method"] == "GET" and "token" in request.query_params
        if login and self.guard.valid(request.query_params.get("token")):
            rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
            target = "/" + ("?" + urlencode(rest) if rest else "")  # a deep link (/?token=T&q=...) kept
            response = RedirectResponse(target, status_code=303, headers={"Cache-Control": "no-store"})
            cookie = cookie_name(headers.get("host", ""))
            response.set_cookie(cookie, self.guard.token, httponly=True, samesite="strict", path="/")
            return await response(scope, receive, send)
        try:
            self.guard.check(
                scope["method"],
                headers.get("host", ""),
                headers.get("authorization"),
                request.cookies.get(cookie_name(headers.get("host", ""))),
                headers.get("origin"),
                headers.get("sec-fetch-site"),
                headers.get("content-type"),
            )
        except Refused as e:
            return await _error(str(e), e.status)(scope, receive, send)
        sandboxed = scope["path"].startswith(("/api/image", "/api/thumb", "/reports"))

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                extra = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]
                if sandboxed:
                    extra.append((b"content-security-policy", FILE_POLICY.encode()))
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        return await self.app(scope, receive, send_with_headers)


# The page: its own script (by nonce) and nothing from elsewhere. Files (images, thumbnails, reports, which have no
# scripts): a sandbox where nothing runs.
FILE_POLICY = "sandbox; default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'"


def _page_policy(nonce: str) -> str:
    return (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'unsafe-inline'; img-src 'self' data: blob:; "
        "connect-src 'self'; frame-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


# What a browser may show of an image, by the format its decoder found (never by the file's name); any other
# format (TIFF, HEIC, PPM, ...) is sent as PNG.
BROWSER_FORMATS = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "GIF": "image/gif",
    "WEBP": "image/webp",
    "BMP": "image/bmp",
}


def _image_response(real: str, shown: str) -> Response:
    """The image file as the type its decoder found: a file that is a PNG and an HTML page, reached through a
    link named .png or named .html, is served as image/png (it was served as text/html, on this origin)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(real) as im:
            kind = BROWSER_FORMATS.get(im.format or "")
            if kind is None:
                im.load()
                out = io.BytesIO()
                im.convert("RGBA" if im.mode in ("RGBA", "LA", "P") else "RGB").save(out, format="PNG")
                return Response(out.getvalue(), media_type="image/png")
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise Refused(f"{shown}: not an image that can be shown ({' '.join(str(e).split())[:120]})", 422) from None
    from starlette.responses import FileResponse

    return FileResponse(real, media_type=kind, content_disposition_type="inline")


def api(handler):
    """Run a sync handler in a thread; its errors become one-line JSON answers."""
    import anyio

    @functools.wraps(handler)
    async def endpoint(request: Request, *args) -> Response:
        return await anyio.to_thread.run_sync(functools.partial(_answer, handler, request, *args))

    endpoint.sync = handler
    return endpoint


def _answer(handler, request: Request, *args) -> Response:
    try:
        return handler(request, *args)
    except Refused as e:
        return _error(str(e), e.status)
    except (UsageError, ZsclipError, ValueError) as e:
        return _error(str(e), 400)
    except LookupError as e:
        return _error(str(e).strip("'\""), 404)
    except Exception as e:
        print(f"zsclip serve: {request.url.path}: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        return _error(f"internal error: {type(e).__name__}: {e}", 500)


def _error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _ints(request: Request, **defaults: int) -> tuple[int, ...]:
    out = []
    for name, default in defaults.items():
        raw = request.query_params.get(name)
        try:
            value = default if raw is None else int(raw)
        except ValueError:
            raise UsageError(f"{name}={raw}: must be a whole number") from None
        if value < 0 or (name == "top" and not 1 <= value <= MAX_TOP):
            raise UsageError(f"{name}={raw}: must be {'1 to ' + str(MAX_TOP) if name == 'top' else '0 or more'}")
        out.append(value)
    return tuple(out)


def _threshold(request: Request) -> float | None:
    raw = request.query_params.get("threshold")
    if raw in (None, ""):
        return None
    try:
        value = float(raw)
    except ValueError:
        raise UsageError(f"threshold={raw}: must be a probability between 0 and 1") from None
    if not 0.0 <= value <= 1.0:
        raise UsageError(f"threshold={raw}: must be a probability between 0 and 1")
    return value


def _json(value) -> str:
    import json

    return json.dumps(value).replace("</", "<\\/")


def _where(request: Request) -> PhotoFilter:
    """taken_after, taken_before (ISO dates), camera and has_gps (true/false) of a search request."""
    params = request.query_params
    gps = params.get("has_gps")
    if gps not in (None, "", "true", "false", "1", "0"):
        raise UsageError(f"has_gps={gps}: use true or false")
    return PhotoFilter.checked(
        params.get("taken_after") or None,
        params.get("taken_before") or None,
        params.get("camera") or None,
        None if gps in (None, "") else gps in ("true", "1"),
    )
