"""One truth about inputs and saved state: when is a file, a folder, a data set or a saved result still what it was?

Every end of zsclip asks this question; they all answer it here, with one rule.

- A **file** is identified by (absolute path, size, mtime_ns, ctime_ns, inode), falling through to the hash of its
  content (BLAKE2b-128) when any of them differ. ctime and inode catch what size and mtime miss: a file rewritten
  with its old mtime put back (`touch -r`, `exiftool -P`, archive tools) has a new ctime, one replaced by rename a
  new inode. A file whose metadata alone changed (a `chmod`, a copy kept with `cp -p`) is still the same content.
- A **folder or data set** is identified by the manifest of its files' (relative path, size, mtime_ns, ctime_ns,
  inode), hashed: a stat per file, no reading, so a 50,000-image folder costs a fraction of a second.
- A **derived state file** (search snapshot, Parquet export, grid row, sort manifest, ONNX export) carries a small
  header naming its kind, the format version and what it was made from. `read_state` checks it: a damaged file, a
  file of another kind or version, or one made from something else raises StateError with one line. The caller
  then rebuilds it or refuses, never serves it.

No torch, no third-party imports: every layer above may use it.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from zsclip.core import atomic

HASH_BLOCK = 1 << 20
STATE_VERSION = 1


# -- files -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Stat:
    """What stat says of a file: equal Stats mean the same content, without reading it."""

    path: str  # absolute
    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int

    def key(self) -> tuple:
        return (self.path, self.size, self.mtime_ns, self.ctime_ns, self.inode)


def stat_of(path: str | os.PathLike, *, regular: bool = True) -> Stat | None:
    """The Stat of the file `path` (links followed), or None when there is none (missing, unreadable or, with
    `regular`, not a regular file: a FIFO or a device would block any read)."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    if regular and not stat.S_ISREG(st.st_mode):
        return None
    return Stat(os.path.abspath(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def content_hash(path: str | os.PathLike) -> str:
    """BLAKE2b-128 of the file's bytes (hex): the identity of content, wherever it lives."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(HASH_BLOCK), b""):
            h.update(block)
    return h.hexdigest()


def digest(data: bytes) -> str:
    """content_hash of bytes in memory: a shard member and a file with the same bytes are the same content."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


@dataclass(frozen=True)
class FileIdentity:
    """A file as it was when something was made from it: its stat identity and the hash of its content."""

    path: str
    size: int
    mtime_ns: int
    content_hash: str
    ctime_ns: int = -1
    inode: int = -1

    @classmethod
    def of(cls, path: str | os.PathLike) -> FileIdentity | None:
        """The identity of a regular file now (reads it for the hash), or None when it cannot be read."""
        st = stat_of(path)
        if st is None:
            return None
        try:
            return cls(st.path, st.size, st.mtime_ns, content_hash(path), st.ctime_ns, st.inode)
        except OSError:
            return None

    def stat_matches(self, st: Stat | None) -> bool:
        return st is not None and (self.path, self.size, self.mtime_ns, self.ctime_ns, self.inode) == st.key()


def unchanged(recorded: FileIdentity, path: str | os.PathLike | None = None) -> bool:
    """Whether the file at `path` (default: the recorded path) still holds the recorded content: its stat
    identity matches, or, when any of it differs, its content hash does. A missing file is not unchanged."""
    path = recorded.path if path is None else path
    st = stat_of(path)
    if st is None:
        return False
    if recorded.stat_matches(st):
        return True
    if not recorded.content_hash or st.size != recorded.size:
        return False  # sizes differ: the content does (the size is part of what the hash covers)
    try:
        return content_hash(path) == recorded.content_hash
    except OSError:
        return False


def same_content(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two files hold the same bytes: the same inode, or equal sizes and hashes."""
    try:
        if os.path.samefile(a, b):
            return True
        if os.path.getsize(a) != os.path.getsize(b):
            return False
        return content_hash(a) == content_hash(b)
    except OSError:
        return False


# -- folders and data sets ---------------------------------------------------------------------------------
def manifest_digest(entries: Iterable[tuple]) -> str:
    """The identity of a set of files: their (relative path, size, mtime_ns, ctime_ns, inode) rows, hashed in
    sorted order. A missing file is a row of its own, so it changes the digest too."""
    h = hashlib.blake2b(digest_size=16)
    for row in sorted(entries, key=lambda r: r[0]):
        h.update(json.dumps(list(row), ensure_ascii=False).encode("utf-8", "surrogateescape"))
        h.update(b"\n")
    return h.hexdigest()


def files_identity(paths: Iterable[str | os.PathLike], base: str | os.PathLike | None = None) -> str:
    """The identity of these files, by path relative to `base` (absolute without one)."""
    rows = []
    for path in paths:
        st = stat_of(path, regular=False)
        name = os.path.relpath(path, base) if base is not None else os.path.abspath(path)
        rows.append((name, *st.key()[1:]) if st is not None else (name, "missing"))
    return manifest_digest(rows)


def tree_identity(root: str | os.PathLike) -> str:
    """The identity of a folder: every file under it (hidden ones too: a data set's metadata can be), links
    followed without loops, by path relative to it. A file is its own one-row tree."""
    root = os.fspath(root)
    if not os.path.isdir(root):
        return files_identity([root], os.path.dirname(root) or ".")
    rows = []
    seen: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            st = os.stat(folder)
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            entries = list(os.scandir(folder))
        except OSError:
            rows.append((os.path.relpath(folder, root), "unreadable"))
            continue
        for entry in entries:
            try:
                is_dir = entry.is_dir(follow_symlinks=True)
            except OSError:
                is_dir = False
            if is_dir:
                stack.append(entry.path)
                continue
            found = stat_of(entry.path, regular=False)
            name = os.path.relpath(entry.path, root)
            rows.append((name, *found.key()[1:]) if found is not None else (name, "dangling"))
    return manifest_digest(rows)


# -- derived state -----------------------------------------------------------------------------------------
class StateError(Exception):
    """A state file that must not be served: missing, damaged, of another kind or version, or made from something
    other than what it is asked for. The message is one line naming the file and what is wrong."""

    def __init__(self, message: str, *, stale: bool = False):
        super().__init__(message)
        self.stale = stale  # True: intact but made from something else (rebuild); False: missing or damaged


def header(kind: str, made_from: dict) -> dict:
    return {"kind": kind, "version": STATE_VERSION, "made_from": _plain(made_from)}


def _plain(value):
    """As JSON reads it back: tuples become lists, so a header compares equal to itself after a round trip."""
    return json.loads(json.dumps(value, ensure_ascii=False))


def write_state(path: str | os.PathLike, kind: str, made_from: dict, body: dict | None = None) -> None:
    """Write a JSON state file atomically: the header under "zsclip_state", then `body`'s keys."""

    data = {"zsclip_state": header(kind, made_from), **(body or {})}
    atomic.write_text(path, json.dumps(data, indent=1, ensure_ascii=False) + "\n")


def read_state(path: str | os.PathLike, kind: str, made_from: dict | None = None) -> dict:
    """The body of the state file at `path` (its keys but the header), after checking its header: of `kind`, of
    this format version, and, when `made_from` is given, made from exactly that. Raises StateError otherwise."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8", errors="surrogateescape"))
    except FileNotFoundError:
        raise StateError(f"{path} is missing") from None
    except (OSError, ValueError) as exc:
        raise StateError(f"{path} is damaged ({type(exc).__name__}: {' '.join(str(exc).split())[:120]})") from None
    found = data.get("zsclip_state") if isinstance(data, dict) else None
    if not isinstance(found, dict) or found.get("kind") != kind:
        raise StateError(f"{path} is not a zsclip {kind} file")
    if found.get("version") != STATE_VERSION:
        raise StateError(f"{path} was written by another zsclip version (format {found.get('version')})", stale=True)
    if made_from is not None and found.get("made_from") != _plain(made_from):
        before = found.get("made_from") if isinstance(found.get("made_from"), dict) else {}
        changed = [k for k in _plain(made_from) if before.get(k) != _plain(made_from)[k]]
        raise StateError(f"{path} was made from other {', '.join(changed) or 'inputs'}", stale=True)
    return {k: v for k, v in data.items() if k != "zsclip_state"}


def made_from_of(path: str | os.PathLike, kind: str) -> dict | None:
    """What an intact state file of `kind` says it was made from, or None."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8", errors="surrogateescape"))
        found = data["zsclip_state"]
        return found["made_from"] if found.get("kind") == kind else None
    except (OSError, ValueError, KeyError, TypeError):
        return None
