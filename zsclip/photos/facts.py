"""What each photo is, read once and kept in the cache under the file's identity (path, size, mtime, ctime,
inode): its content hash, pixels, EXIF capture facts (zsclip.photos.exif) and two perceptual hashes (the whole
picture's and its centre's DCT hash, imagehash.phash: a copy resized, recompressed or re-exported keeps the
first, one cropped a little keeps the second). A file whose identity changed is read again; the others cost one
stat each.

The EXIF columns need the header only; the hashes need the pixels (decoded at a reduced JPEG scale: a 32x32
hash needs no more), read the first time something asks for them (`zsclip dupes`)."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image

from zsclip.core.limits import DEFAULT_MAX_PIXELS
from zsclip.photos.exif import Capture, capture_of
from zsclip.pipeline.formats import is_raw
from zsclip.pipeline.images import SkipFile, check_file, check_pixels, open_image, to_rgb, upright
from zsclip.store.cache import Cache
from zsclip.store.identity import content_hash, stat_of

SCHEMA = """
CREATE TABLE IF NOT EXISTS photo_facts (
    path     TEXT PRIMARY KEY,
    size     INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL,
    inode    INTEGER NOT NULL,
    width    INTEGER NOT NULL,
    height   INTEGER NOT NULL,
    taken    TEXT,
    make     TEXT,
    model    TEXT,
    gps      INTEGER NOT NULL,
    content_hash TEXT,   -- filled with the hashes, by the first reader that needs them
    phash    INTEGER,    -- 64-bit DCT hash of the whole picture, as a signed integer
    center   INTEGER,    -- the same of its central 80 %
    flat     INTEGER     -- 1: nearly uniform (a black frame, a blank sky): its hashes say nothing, no near tier
);
"""
FLAT = 3.0  # grey levels: below this standard deviation at 32x32 a picture is flat (its DCT hash is noise)
HASH_SIDE = 64  # decode JPEGs at the smallest DCT scale that leaves both sides >= this (the hash reads 32x32)
CENTER = 0.1  # the centre hash leaves this much of each side out


@dataclass(frozen=True)
class Facts:
    path: str
    size: int
    width: int
    height: int
    capture: Capture
    content_hash: str | None = None
    phash: int | None = None
    center: int | None = None
    flat: bool = False

    @property
    def pixels(self) -> int:
        return self.width * self.height

    def to_dict(self) -> dict:
        return {
            "taken": self.capture.taken,
            "camera": self.capture.camera,
            "gps": self.capture.gps,
        }


def _signed(h: int) -> int:
    return h - (1 << 64) if h >= 1 << 63 else h


def read_facts(path: str, hashes: bool, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Facts:
    """Read one file's facts (raises SkipFile with the reason when it cannot be read as an image)."""
    import imagehash  # the photos extra; a missing one is said where hashes are asked for (require_hashing)

    check_file(path)
    try:
        with open_image(path) as im:
            check_pixels(im.size, max_pixels)
            capture = capture_of(im)
            if is_raw(path) and None in (capture.taken, capture.camera):  # a preview may carry little EXIF
                capture = _merged(capture, raw_capture(path))
            size = upright_size(im)  # before a draft decode shrinks it
            phash = center = digest = None
            flat = False
            if hashes:
                if im.format == "JPEG":
                    im.draft("RGB", (HASH_SIDE, HASH_SIDE))
                im.load()
                rgb = to_rgb(upright(im))
                w, h = rgb.size
                inner = rgb.crop((int(w * CENTER), int(h * CENTER), int(w * (1 - CENTER)), int(h * (1 - CENTER))))
                flat = float(np.asarray(rgb.convert("L").resize((32, 32)), dtype=np.float32).std()) < FLAT
                phash = _signed(int(str(imagehash.phash(rgb)), 16))
                center = _signed(int(str(imagehash.phash(inner)), 16))
                digest = content_hash(path)
    except SkipFile:
        raise
    except Exception as exc:  # what decode_image turns into skip reasons
        raise SkipFile(f"cannot decode: {' '.join(str(exc).split()) or type(exc).__name__}") from None
    return Facts(path, os.path.getsize(path), size[0], size[1], capture, digest, phash, center, flat)


def _merged(first: Capture, second: Capture) -> Capture:
    return Capture(
        first.taken or second.taken, first.make or second.make, first.model or second.model, first.gps or second.gps
    )


def raw_capture(path: str) -> Capture:
    """The capture facts in a RAW file's own TIFF header (CR2, NEF, ARW, DNG are TIFF inside), where Pillow reads
    it; an empty Capture otherwise."""
    try:
        with Image.open(path) as im:
            return capture_of(im)
    except Exception:
        return Capture()


def upright_size(im: Image.Image) -> tuple[int, int]:
    """(width, height) as the photo is shown: swapped when EXIF says it is rotated a quarter turn."""
    try:
        orientation = im.getexif().get(0x0112, 1)
    except Exception:
        orientation = 1
    w, h = im.size
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def require_hashing() -> None:
    from zsclip.core.errors import UsageError

    try:
        import imagehash  # noqa: F401  the photos extra
    except ImportError:
        raise UsageError("zsclip dupes needs the photos extra: pip install 'zsclip[photos]'") from None


class FactsTable:
    """The photo_facts table of a cache, one connection per thread (zsclip.store.cache)."""

    def __init__(self, cache: Cache):
        self.cache = cache
        conn = self.cache.conn
        conn.executescript(SCHEMA)
        columns = {row[1] for row in conn.execute("PRAGMA table_info(photo_facts)")}
        if "flat" not in columns:  # a table made before flat pictures were told apart: read them as not flat
            with conn:
                conn.execute("ALTER TABLE photo_facts ADD COLUMN flat INTEGER")

    def get(self, paths: list[str]) -> dict[str, tuple]:
        rows = {}
        conn = self.cache.conn
        for i in range(0, len(paths), 900):
            chunk = paths[i : i + 900]
            marks = ",".join("?" * len(chunk))
            for row in conn.execute(f"SELECT * FROM photo_facts WHERE path IN ({marks})", chunk):
                rows[row[0]] = row
        return rows

    def put(self, facts: list[tuple[Facts, tuple]]) -> None:
        conn = self.cache.conn
        with conn:
            conn.executemany(
                "INSERT OR REPLACE INTO photo_facts VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [
                    (
                        f.path,
                        *key[1:],
                        f.width,
                        f.height,
                        f.capture.taken,
                        f.capture.make,
                        f.capture.model,
                        int(f.capture.gps),
                        f.content_hash,
                        f.phash,
                        f.center,
                        int(f.flat),
                    )
                    for f, key in facts
                ],
            )


def _from_row(row: tuple) -> Facts:
    path, size, _, _, _, width, height, taken, make, model, gps, digest, phash, center, flat = row
    return Facts(path, size, width, height, Capture(taken, make, model, bool(gps)), digest, phash, center, bool(flat))


def facts_of(
    paths: Iterable[str],
    cache: Cache | FactsTable | None = None,
    *,
    hashes: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    threads: int | None = None,
    on_file: Callable[[int], None] | None = None,
) -> tuple[dict[str, Facts], list[tuple[str, str]]]:
    """The facts of every file (absolute paths), from the cache where the file is unchanged (and, with `hashes`,
    hashed already), else read (in threads: decoding releases the GIL) and kept. Returns (facts by path, skipped
    (path, reason)). `cache` may be a FactsTable already open (a caller asking file by file)."""
    table = cache if isinstance(cache, FactsTable) else FactsTable(cache or Cache())
    paths = [os.path.abspath(p) for p in paths]
    known = table.get(paths)
    found: dict[str, Facts] = {}
    todo: list[tuple[str, tuple]] = []
    for path in paths:
        st = stat_of(path)
        if st is None:
            todo.append((path, ()))
            continue
        row = known.get(path)
        if row is not None and tuple(row[:5]) == st.key() and (not hashes or row[12] is not None):
            found[path] = _from_row(row)
            if on_file:
                on_file(1)
        else:
            todo.append((path, st.key()))
    skipped: list[tuple[str, str]] = []

    def read(item: tuple[str, tuple]):
        path, key = item
        try:
            if not key:
                check_file(path)  # the reason a stat failed
                raise SkipFile("cannot read it")
            return path, key, read_facts(path, hashes, max_pixels), None
        except SkipFile as exc:
            return path, key, None, str(exc)

    fresh: list[tuple[Facts, tuple]] = []
    workers = min(threads or 4, os.cpu_count() or 1, len(todo))
    with ThreadPoolExecutor(workers) if workers > 1 else contextlib.nullcontext() as pool:
        for path, key, facts, reason in pool.map(read, todo) if pool else map(read, todo):
            if facts is None:
                skipped.append((path, reason or "cannot read it"))
            else:
                found[path] = facts
                fresh.append((facts, key))
                if len(fresh) >= 256:
                    _keep(table, fresh)
            if on_file:
                on_file(1)
    _keep(table, fresh)
    return found, skipped


def _keep(table: FactsTable, fresh: list) -> None:
    try:
        if fresh:
            table.put(fresh)
    except sqlite3.Error:
        pass  # the facts are a memo: a cache that cannot take them costs a re-read next time, not this run
    fresh.clear()
