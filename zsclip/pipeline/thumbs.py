"""Thumbnails (`zsclip serve`'s page, `zsclip dupes --report`): WebP, made once, kept in the cache under the file's
identity (real path, size, mtime, ctime, inode), so an edited or replaced file gets a new one; EXIF rotation applied;
the same pixel limit and decode timeout as every other read."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

from zsclip.core import atomic
from zsclip.core.limits import DEFAULT_FILE_TIMEOUT, DEFAULT_MAX_PIXELS
from zsclip.pipeline.images import SkipFile, check_pixels, open_image, time_limit

SIZE = 320


def thumbnail(path: str, folder: Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> bytes:
    """The WebP thumbnail of the image at `path` (a real path), made if missing; SkipFile if it cannot be read."""
    target = target_of(path, folder)
    try:
        return target.read_bytes()
    except OSError:
        pass
    data = make(path, max_pixels)
    folder.mkdir(parents=True, exist_ok=True)
    atomic.write_bytes(target, data)
    return data


def target_of(path: str, folder: Path) -> Path:
    """Where the thumbnail of the file at `path`, as it is now, lives in `folder` (OSError if it is gone)."""
    st = os.stat(path)
    key = f"{path}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\0{st.st_ino}\0{SIZE}"
    return folder / f"{hashlib.sha256(key.encode('utf-8', 'surrogateescape')).hexdigest()}.webp"


def make(path: str, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> bytes:
    from PIL import ImageOps

    with time_limit(DEFAULT_FILE_TIMEOUT):
        try:
            with open_image(path) as im:
                check_pixels(im.size, max_pixels)
                im.draft("RGB", (SIZE, SIZE))
                im = ImageOps.exif_transpose(im)
                im.thumbnail((SIZE, SIZE))
                out = io.BytesIO()
                (im if im.mode in ("RGB", "RGBA") else im.convert("RGBA")).save(out, "WEBP", quality=80)
                return out.getvalue()
        except SkipFile:
            raise
        except Exception as e:
            raise SkipFile(f"cannot make a thumbnail: {type(e).__name__}: {e}") from e
