"""PATH arguments -> candidate image files: @lists read, folders walked in sorted order (recursively by default,
hidden entries skipped, symlinks followed without loops). No decoding here and nothing heavy imported, so the CLI
can refuse a path with no images before torch loads."""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
from collections.abc import Container, Iterable, Iterator
from dataclasses import dataclass, field

from zsclip.core.errors import UsageError
from zsclip.core.textfiles import read_text

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
    | {".avif", ".heic", ".heif", ".mpo"}
    | {".cr2", ".cr3", ".nef", ".nrw", ".arw", ".dng", ".orf", ".rw2", ".raf", ".pef", ".srw"}  # camera RAW
)
RAW_EXTENSIONS = frozenset({".cr2", ".cr3", ".nef", ".nrw", ".arw", ".dng", ".orf", ".rw2", ".raf", ".pef", ".srw"})
# Which files stand for a RAW of the same name in the same folder: the camera's own JPEG, or a phone's HEIC.
DEVELOPED = frozenset({".jpg", ".jpeg", ".heic", ".heif"})
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")


# -- finding files -----------------------------------------------------------------------------------------
def expand_sources(sources: Iterable[str | os.PathLike]) -> list[tuple[str, bool]]:
    """Check the user's PATH arguments and read @list files: (path, is_explicit_file) per source."""
    out: list[tuple[str, bool]] = []
    for src in map(str, sources):
        if is_uri(src):  # object storage, read by the Ray engine; listed lazily by walk
            out.append((src, has_image_extension(src)))
            continue
        if src.startswith("@"):
            # A folder in a list is walked, as on the command line; a missing entry is a skip record later.
            out.extend((p, not os.path.isdir(p)) for p in _read_list(src[1:]))
            continue
        if not os.path.lexists(src):  # a dangling link or a loop is a file to skip with its reason
            raise UsageError(f"{src}: no such file or directory")
        out.append((src, not os.path.isdir(src)))
    if not out:
        raise UsageError("no input paths given")
    return out


def _read_list(list_file: str) -> list[str]:
    """The paths of an @list, one a line; names that are not UTF-8 keep their bytes (see zsclip.core.textfiles)."""
    if not list_file:
        raise UsageError("@: give the list file's name after @ (e.g. @paths.txt)")
    lines = read_text(list_file, "@", errors="surrogateescape").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


@dataclass
class Exclude:
    """What a run leaves out of the walk: `files` it has already (any Container of paths: a resumed run's
    records) and `folders` it must never enter, however they are reached (a sort's own folder, reachable from the
    source through a symbolic link), as (st_dev, st_ino) pairs."""

    files: Container[str] = ()
    folders: frozenset[tuple[int, int]] = field(default_factory=frozenset)

    def __contains__(self, path: object) -> bool:
        return path in self.files

    @staticmethod
    def folder_id(path: str | os.PathLike) -> tuple[int, int] | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        return st.st_dev, st.st_ino


def walk(
    sources: list[tuple[str, bool]],
    recursive: bool = True,
    shard: tuple[int, int] | None = None,
    exclude: Container[str] = (),
) -> Iterator[tuple[str, bool]]:
    """Every candidate entry under the sources, in sorted order: (path, explicit). With `shard` (i, N), only
    the entries that fall in shard i (see in_shard); paths in `exclude` are left out, and so are the folders of
    an Exclude (never entered)."""
    avoid = exclude.folders if isinstance(exclude, Exclude) else frozenset()
    for path, explicit in sources:
        if explicit:
            if (shard is None or in_shard(path, shard)) and path not in exclude:
                yield path, True
            continue
        for p in _walk_uri(path, recursive) if is_uri(path) else _walk_dir(path, recursive, avoid):
            if (shard is None or in_shard(os.path.relpath(p, path), shard)) and p not in exclude:
                yield p, False


# -- object storage ----------------------------------------------------------------------------------------
URI_SCHEMES = ("s3://", "gs://", "gcs://", "abfs://", "abfss://", "hdfs://", "file://")


def is_uri(path: str) -> bool:
    """An object-store (or file://) URI, read through pyarrow's file systems by the Ray engine."""
    return path.lower().startswith(URI_SCHEMES)


def uri_filesystem(uri: str):
    """(pyarrow FileSystem, path inside it) for a URI; a missing pyarrow is a one-line usage error."""
    try:
        from pyarrow import fs
    except ImportError:
        raise UsageError(f'{uri}: reading object storage needs pyarrow: pip install "zsclip[ray]"') from None
    try:
        return fs.FileSystem.from_uri(uri)
    except Exception as exc:  # pyarrow raises ArrowInvalid / OSError for unknown schemes and bad credentials
        raise UsageError(f"{uri}: cannot open ({' '.join(str(exc).split())[:200]})") from None


def _walk_uri(uri: str, recursive: bool) -> Iterator[str]:
    """The files under a URI prefix, sorted as a folder walk is (hidden names skipped)."""
    from pyarrow import fs

    filesystem, root = uri_filesystem(uri)
    try:
        infos = filesystem.get_file_info(fs.FileSelector(root, recursive=recursive, allow_not_found=True))
    except (OSError, UnicodeDecodeError) as exc:  # pyarrow lists UTF-8 names only
        raise UsageError(f"{uri}: cannot list ({' '.join(str(exc).split())[:200]})") from None
    scheme = uri[: uri.index("://") + 3]
    prefix = root.rstrip("/") + "/"
    names = [i.path for i in infos if i.type == fs.FileType.File]
    for name in sorted(names, key=lambda n: n.split("/")):  # by path component, as the walk orders folders
        relative = name[len(prefix) :] if name.startswith(prefix) else name
        if not any(part.startswith(".") for part in relative.split("/")):
            yield scheme + name


# -- sharding ----------------------------------------------------------------------------------------------
def parse_shard(text: str | None) -> tuple[int, int] | None:
    """--shard i/N (0 <= i < N) as (i, N); None for None."""
    if text is None:
        return None
    i, sep, n = text.strip().partition("/")
    try:
        shard = (int(i), int(n))
    except ValueError:
        shard = None
    if not sep or shard is None or shard[1] < 1 or not 0 <= shard[0] < shard[1]:
        raise UsageError(f"--shard {text}: give i/N with 0 <= i < N, e.g. --shard 0/4 for the first of 4 shards")
    return shard


def in_shard(relative_path: str, shard: tuple[int, int]) -> bool:
    """Whether a file belongs to shard i of N: a stable hash (SHA-1) of its path relative to the PATH argument
    (for a file given by name, the name as given), so N processes cover each file exactly once, the split is
    the same on every machine and run, and adding files never moves an old one to another shard."""
    i, n = shard
    key = os.fsencode(relative_path.replace(os.sep, "/"))  # fsencode: names that are not UTF-8 keep their bytes
    return int.from_bytes(hashlib.sha1(key).digest()[:8], "big") % n == i


def raw_siblings(names: list[str]) -> set[str]:
    """The RAW files among `names` (one folder's entries) that a developed file of the same stem stands for."""
    stems = {os.path.splitext(n)[0].lower() for n in names if os.path.splitext(n)[1].lower() in DEVELOPED}
    return {
        n for n in names if os.path.splitext(n)[1].lower() in RAW_EXTENSIONS and os.path.splitext(n)[0].lower() in stems
    }


def by_stem(folder: str) -> dict[str, list[str]]:
    """A folder's entries by stem ('IMG_1.CR2' and 'IMG_1.jpg' under 'IMG_1', 'IMG_1.jpg.xmp' under 'IMG_1.jpg'):
    what `companions` looks in, listed once for every photo of the folder."""
    index: dict[str, list[str]] = {}
    with contextlib.suppress(OSError):
        for name in os.listdir(folder or "."):
            index.setdefault(os.path.splitext(name)[0], []).append(name)
    return index


def companions(photo: str, index: dict[str, list[str]] | None = None) -> list[tuple[str, str]]:
    """The files that belong with a photo and go where it goes: (path, name beside its new name, as a suffix
    template "{stem}" / "{name}"): its XMP sidecars (NAME.EXT.xmp; NAME.xmp when no other photo shares the stem)
    and, for a developed JPEG or HEIC, the RAW of the same stem it stands for. `index`: its folder's by_stem (one
    listing for many photos; an entry gone since is left out)."""
    folder, name = os.path.split(photo)
    stem, ext = os.path.splitext(name)
    index = by_stem(folder) if index is None else index
    found = []
    if f"{name}.xmp" in index.get(name, ()):
        found.append((os.path.join(folder, f"{name}.xmp"), "{name}.xmp"))
    same_stem = [n for n in index.get(stem, ()) if n != name]
    others = [n for n in same_stem if os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS]
    raws = [n for n in others if os.path.splitext(n)[1].lower() in RAW_EXTENSIONS] if ext.lower() in DEVELOPED else []
    for n in raws:
        found.append((os.path.join(folder, n), "{stem}" + os.path.splitext(n)[1]))
    if f"{stem}.xmp" in index.get(stem, ()) and len(others) == len(raws):  # no photo stays that it could belong to
        found.append((os.path.join(folder, f"{stem}.xmp"), "{stem}.xmp"))
    return [(path, template) for path, template in found if os.path.lexists(path)]


def _walk_dir(root: str, recursive: bool, avoid: frozenset[tuple[int, int]] = frozenset()) -> Iterator[str]:
    seen: set[tuple[int, int]] = set(avoid)
    stack: list[Iterator[os.DirEntry]] = []

    def enter(path: str) -> None:
        try:
            st = os.stat(path)
            key = (st.st_dev, st.st_ino)
            if key in seen:  # a symlink back up the tree, or two links to one folder
                return
            seen.add(key)
            with os.scandir(path) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            return
        paired = raw_siblings([e.name for e in entries])  # RAW+JPEG: one photo, read from the JPEG
        stack.append(iter([e for e in entries if e.name not in paired]))

    enter(root)
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
            continue
        if entry.name.startswith("."):
            continue
        try:
            is_dir = entry.is_dir(follow_symlinks=True)
        except OSError:
            is_dir = False
        if is_dir:
            if recursive:
                enter(entry.path)
        else:
            yield entry.path


def has_image_extension(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def looks_like_image(path: str) -> bool:
    """Sniff magic bytes, for image files without an image extension."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            return False
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return False
    return head.startswith(_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP") or head[4:8] == b"ftyp"


def count_candidates(
    sources: list[tuple[str, bool]],
    recursive: bool = True,
    shard: tuple[int, int] | None = None,
    exclude: Container[str] = (),
) -> int:
    """How many entries look like images by name: a cheap total for progress bars."""
    return sum(1 for p, explicit in walk(sources, recursive, shard, exclude) if explicit or has_image_extension(p))


def first_image(sources: list[tuple[str, bool]], recursive: bool = True, exclude: Container[str] = ()) -> str | None:
    """The first entry that would be classified, to fail fast on a folder with no images."""
    for path, explicit in walk(sources, recursive, exclude=exclude):
        if explicit or has_image_extension(path) or looks_like_image(path):
            return path
    return None


def check_sources(paths: Iterable[str], recursive: bool = True) -> list[tuple[str, bool]]:
    """The user's PATH arguments expanded, with a usage error when they hold no image at all."""
    sources = expand_sources(paths)
    if first_image(sources, recursive) is None:
        looked = " ".join(sorted(IMAGE_EXTENSIONS))
        raise UsageError(f"no images found under {', '.join(map(str, paths))} (looked for {looked})")
    return sources
