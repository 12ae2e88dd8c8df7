"""What phones and cameras write, beyond what Pillow reads alone (the `photos` extra: pip install
'zsclip[photos]'): HEIC/HEIF through pillow-heif, and camera RAW (CR2, NEF, ARW, DNG, ...) through rawpy, read
from the preview JPEG the camera embeds (a full RAW develop takes seconds a photo; the preview is what the camera
showed, at several megapixels, and is what CLIP needs). MPO (a phone's or 3D camera's multi-picture JPEG) is read
by Pillow as its first picture.

A RAW with a JPEG (or HEIC) of the same name beside it is one photo: folders are walked with the JPEG alone
(zsclip.pipeline.sources.walk)."""

from __future__ import annotations

import io
import os

from PIL import Image

from zsclip.pipeline.sources import RAW_EXTENSIONS

PHOTOS_EXTRA = "pip install 'zsclip[photos]'"
HEIF_EXTENSIONS = frozenset({".heic", ".heif"})

try:  # phone photos: HEIC/HEIF decode only with this optional plugin
    from pillow_heif import register_heif_opener

    register_heif_opener()
    HEIF_PLUGIN = True
except ImportError:
    HEIF_PLUGIN = False


class MissingExtra(Exception):
    """A file of a format whose reader is not installed: its skip reason names the extra."""


def is_raw(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in RAW_EXTENSIONS


def open_raw(path: str) -> Image.Image:
    """A RAW file's embedded preview as an Image (EXIF of the preview kept, so it is upright and dated)."""
    try:
        import rawpy  # optional: the photos extra
    except ImportError:
        raise MissingExtra(f"RAW files need the photos extra: {PHOTOS_EXTRA}") from None
    with rawpy.imread(path) as raw:
        try:
            thumb = raw.extract_thumb()
        except (rawpy.LibRawNoThumbnailError, rawpy.LibRawUnsupportedThumbnailError):
            thumb = None
        if thumb is not None and thumb.format == rawpy.ThumbFormat.JPEG:
            return Image.open(io.BytesIO(thumb.data))
        if thumb is not None and thumb.format == rawpy.ThumbFormat.BITMAP:
            return Image.fromarray(thumb.data)
        # No preview: develop at half size (seconds, but the photo is not lost).
        return Image.fromarray(raw.postprocess(half_size=True, use_camera_wb=True))


def missing_reader(path: str) -> str | None:
    """Why a file of this name cannot be read here (its extra is not installed), or None."""
    ext = os.path.splitext(path)[1].lower()
    if ext in HEIF_EXTENSIONS and not HEIF_PLUGIN:
        return f"HEIC/HEIF photos need the photos extra: {PHOTOS_EXTRA}"
    if ext in RAW_EXTENSIONS:
        try:
            import rawpy  # noqa: F401  optional: the photos extra
        except ImportError:
            return f"RAW files need the photos extra: {PHOTOS_EXTRA}"
    return None
