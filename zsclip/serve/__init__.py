"""`zsclip serve`: a local web page (and a JSON API) to search, classify and browse photo folders.

- zsclip.serve.library: the folders, indexed in the background through the store; search and classify.
- zsclip.serve.guard: which files and requests are let through (containment, token, Host).
- zsclip.pipeline.thumbs: WebP thumbnails in the cache, keyed by the file's identity.
- zsclip.serve.app: the Starlette app (the page, /api/...), zsclip.serve.openapi its description.
Needs the `zsclip[serve]` extra (starlette, uvicorn).
"""
