"""A corpus of odd-but-valid, bad, and non-image files, made on the fly (never committed), for robustness tests."""

from __future__ import annotations

import io
import os
import socket
from pathlib import Path

import numpy as np
from PIL import Image

from zsclip.pipeline.formats import HEIF_PLUGIN

# name -> what zsclip must do with it: "ok" (classified), "skip: <part of the reason>", "ignore" (not reported)
EXPECTED: dict[str, str] = {}


def _photo(size=(64, 48), seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def _add(root: Path, name: str, expect: str, data: bytes | None = None, image: Image.Image | None = None, **save):
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if image is not None:
        image.save(path, **save)
    elif data is not None:
        path.write_bytes(data)
    EXPECTED[name] = expect
    return path


def make_corpus(root: Path) -> dict[str, str]:
    """Write every kind of file into root; returns {relative name: expected outcome}."""
    EXPECTED.clear()
    root.mkdir(parents=True, exist_ok=True)
    good_jpeg = io.BytesIO()
    _photo((200, 150)).save(good_jpeg, format="JPEG", quality=90)
    good_png = io.BytesIO()
    _photo((200, 150), 1).save(good_png, format="PNG")

    # odd but valid
    _add(root, "one_pixel.png", "ok", image=Image.new("RGB", (1, 1), (9, 9, 9)))
    _add(root, "sixteen_bit.png", "ok", image=Image.fromarray(np.full((20, 30), 40000, dtype=np.uint16)))
    _add(root, "grey_alpha.png", "ok", image=Image.new("LA", (20, 20), (128, 100)))
    pal = Image.new("P", (20, 20), 3)
    pal.info["transparency"] = 3
    _add(root, "palette_transparent.png", "ok", image=pal)
    _add(root, "cmyk.jpg", "ok", image=_photo().convert("CMYK"), format="JPEG")
    exif = Image.Exif()
    exif[0x0112] = 6
    _add(root, "exif_rotated.jpg", "ok", image=_photo((60, 30)), format="JPEG", exif=exif)
    _add(root, "progressive.jpg", "ok", image=_photo(), format="JPEG", progressive=True)
    frames = [Image.new("RGB", (20, 20), c) for c in ((255, 0, 0), (0, 255, 0))]
    _add(root, "animated.gif", "ok", image=frames[0], save_all=True, append_images=frames[1:])
    _add(root, "photo.webp", "ok", image=_photo(), format="WEBP")
    _add(root, "photo.tiff", "ok", image=_photo(), format="TIFF")
    _add(root, "photo.bmp", "ok", image=_photo(), format="BMP")
    _add(root, "photo.avif", "ok", image=_photo(), format="AVIF")
    _add(root, "grey.pgm", "ok", image=_photo().convert("L"), format="PPM")
    _add(root, "very_wide.png", "ok", image=Image.new("RGB", (2000, 2), (1, 2, 3)))
    _add(root, "UPPER.JPG", "ok", image=_photo(), format="JPEG")
    _add(root, "png_named.jpg", "ok", data=good_png.getvalue())
    _add(root, "spaces and ünïcødé 写真.jpg", "ok", data=good_jpeg.getvalue())
    _add(root, "/".join(f"d{i}" for i in range(30)) + "/deep.jpg", "ok", data=good_jpeg.getvalue())
    (root / "link_to_photo.jpg").symlink_to(root / "UPPER.JPG")
    EXPECTED["link_to_photo.jpg"] = "ok"

    # bad
    _add(root, "empty.jpg", "skip: empty file", data=b"")
    _add(root, "truncated.jpg", "skip: cannot decode", data=good_jpeg.getvalue()[: len(good_jpeg.getvalue()) // 3])
    _add(root, "truncated.png", "skip: cannot decode", data=good_png.getvalue()[: len(good_png.getvalue()) // 3])
    corrupt = bytearray(good_png.getvalue())
    idat = corrupt.find(b"IDAT")
    corrupt[idat + 40 : idat + 400] = bytes(360)
    _add(root, "corrupt_data.png", "skip: cannot decode", data=bytes(corrupt))
    _add(root, "text.jpg", "skip: not a recognised image format", data=b"just some text, not an image\n")
    _add(root, "page.png", "skip: not a recognised image format", data=b"<!doctype html><html><body>404</body></html>")
    _add(root, "header_only.jpg", "skip: cannot decode", data=b"\xff\xd8\xff\xe0\x00\x10JFIF\x00")
    heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64)  # an iPhone photo's header, no image
    # Without pillow-heif the reason names the photos extra; with it, this header alone is no image it can read.
    why = "not a recognised image format" if HEIF_PLUGIN else "photos extra"
    _add(root, "IMG_0001.HEIC", f"skip: {why}", data=heic)
    bomb = io.BytesIO()
    Image.new("1", (20000, 20000)).save(bomb, format="PNG")  # 400M pixels in a few KB
    _add(root, "bomb.png", "skip: over the --max-pixels limit", data=bomb.getvalue())
    (root / "dangling.jpg").symlink_to(root / "does-not-exist.jpg")
    EXPECTED["dangling.jpg"] = "skip: broken symbolic link"
    (root / "loop_a.jpg").symlink_to(root / "loop_b.jpg")
    (root / "loop_b.jpg").symlink_to(root / "loop_a.jpg")
    EXPECTED["loop_a.jpg"] = EXPECTED["loop_b.jpg"] = "skip: symbolic link loop"
    os.mkfifo(root / "fifo.jpg")
    EXPECTED["fifo.jpg"] = "skip: not a regular file"
    (root / "device.png").symlink_to("/dev/zero")  # reading it would never end
    EXPECTED["device.png"] = "skip: not a regular file"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "socket.jpg"))
    sock.close()
    EXPECTED["socket.jpg"] = "skip: not a regular file"
    if os.geteuid() != 0:  # root reads anything; tests/test_images.py covers the reason there
        _add(root, "unreadable.jpg", "skip: permission denied", data=good_jpeg.getvalue()).chmod(0)

    # not images: ignored, not failures
    _add(root, "notes.txt", "ignore", data=b"hello")
    _add(root, "data.csv", "ignore", data=b"a,b\n1,2\n")
    _add(root, ".DS_Store", "ignore", data=b"\x00\x00\x00\x01Bud1")
    (root / "folder.jpg").mkdir()  # a directory with an image name: walked into, holds nothing
    EXPECTED["folder.jpg"] = "ignore"
    return dict(EXPECTED)
