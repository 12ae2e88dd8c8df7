"""The JSON API of `zsclip serve`, described for /api/openapi.json (OpenAPI 3.1); docs/serve.md says the same in
prose. tests/test_serve.py checks that every route of the app is described here and every described one exists."""

from __future__ import annotations


def _get(summary: str, params: dict[str, str], returns: str) -> dict:
    return {
        "get": {
            "summary": summary,
            "parameters": [
                {"name": name, "in": "query", "description": text, "schema": {"type": "string"}}
                for name, text in params.items()
            ],
            "responses": {"200": {"description": returns}, "4XX": {"description": '{"error": "one line"}'}},
        }
    }


_CLASSES = {
    "classes": "class names, comma-separated (at least two)",
    "templates": "template set (default: default)",
    "threshold": "below this top-1 probability an image is 'unknown' (optional)",
}
_SEARCH = {
    "q": "the text",
    "like": "an indexed image's path (more like this)",
    "top": "1-500 (24)",
    "offset": "for the next page (0)",
}
_TOKEN = (
    "every request (loopback too, unless --no-token): the header `Authorization: token T`, or the cookie the page "
    "sets after /?token=T"
)

OPENAPI = {
    "openapi": "3.1.0",
    "info": {"title": "zsclip serve", "version": "1", "description": f"Token: {_TOKEN}. Errors: 4xx, one line."},
    "paths": {
        "/api/status": _get("indexing progress and the number of served images", {}, "status object"),
        "/api/search": _get(
            "images most like a text ('+term' adds, '-term' subtracts) or like an indexed image",
            {
                "q": "the text",
                "like": "an indexed image's path (more like this)",
                "top": "1-500 (24)",
                "offset": "for the next page (0)",
                "taken_after": "only photos taken on or after this ISO date or time (EXIF)",
                "taken_before": "only photos taken before this ISO date or time",
                "camera": "only photos from this camera (make or model, any part, any case)",
                "has_gps": "true: only photos with a GPS position; false: only those without",
            },
            '{"results": [{"path": ..., "score": ...}], "images": N}',
        ),
        "/api/search/image": {
            "post": {
                "summary": "images most like the uploaded image (the request body is the file's bytes)",
                "parameters": [{"name": "top", "in": "query", "schema": {"type": "integer"}}],
                "responses": {"200": {"description": "as /api/search"}, "413": {"description": "over the limit"}},
            }
        },
        "/api/classify": _get(
            "every served image's top-1 label and probability for these classes",
            _CLASSES,
            '{"labels": [...], "paths": [...], "label": [index], "prob": [p]}',
        ),
        "/api/classify/records": _get(
            "the records `zsclip classify` writes, as a download",
            {**_CLASSES, "format": "csv or jsonl"},
            "CSV or JSONL",
        ),
        "/api/sort/plan": _get(
            "where each image would go under --sort-into DIR (nothing is written)",
            {**_CLASSES, "mode": "copy, move or link"},
            '{"rows": [{"path", "label", "to"}], "summary": [...]}',
        ),
        "/api/sort": {
            "post": {
                "summary": "sort into --sort-into DIR (needs --allow-write and the token); a later sort continues "
                "the folder's manifest",
                "parameters": [
                    {"name": name, "in": "query", "description": text, "schema": {"type": "string"}}
                    for name, text in {**_CLASSES, "mode": "copy, move or link"}.items()
                ],
                "responses": {"200": {"description": "as /api/sort/plan"}, "403": {"description": "not allowed"}},
            }
        },
        "/api/rescan": {"post": {"summary": "index the folders again now", "responses": {"200": {"description": ""}}}},
        "/api/thumb": _get("a WebP thumbnail of a served image", {"path": "its path"}, "image/webp"),
        "/api/image": _get("a served image, as it is on disk", {"path": "its path"}, "the file"),
        "/api/openapi.json": _get("this description", {}, "OpenAPI 3.1"),
    },
}
