"""The image-embedding store: classify the same files again, with other classes or templates, without
re-encoding a single image.

Vectors live in the cache's SQLite file, keyed by model fingerprint, a variant (precision + preprocessing +
decoding version) and file identity: path, size, mtime, ctime and inode, with a content hash so moved or renamed
files are found too. ctime and inode matter: a file rewritten with its old mtime put back (`touch -r`, `exiftool -P`,
archive tools) keeps path, size and mtime, but not its ctime; a file replaced by rename gets a new inode. Any
difference falls through to the content hash, so a file that only changed metadata still reuses its vector.
A sample inside a tar shard is keyed the same way by its member address (see ImageStore.lookup).
Decoding workers look files up before decoding them; only the main process writes.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from dataclasses import dataclass

import numpy as np

from zsclip.core.errors import is_disk_full
from zsclip.core.progress import log
from zsclip.store.cache import Cache, file_id, replaced
from zsclip.store.identity import FileIdentity, content_hash, digest, stat_of
from zsclip.store.shards import MemberError, is_member, member_identity, read_member

__all__ = ["DECODE_VERSION", "FileIdentity", "ImageStore", "content_hash", "variant_key"]

DECODE_VERSION = "decode-1"  # bump when decoding or colour handling changes pixels


def variant_key(precision: str, preprocess_key: str, draft: int | None = None) -> str:
    """What besides the weights changes an image vector: precision, JPEG draft decoding and the preprocessing
    (its key, ClipModel.preprocess_key)."""
    return f"{precision}|{DECODE_VERSION}|draft={draft or 0}|{preprocess_key}"


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def stat_key(path: str) -> tuple[str, int, int, int, int] | None:
    """(key, size, stamp, ctime_ns, inode): how the store names a file or a shard member now, by the identity rule
    of zsclip.store.identity; None when there is nothing to store or look up (missing, not a regular file, a member that
    cannot be read, a name SQLite cannot hold)."""
    member = is_member(path)
    try:
        if member is not None:
            key, size, stamp = member_identity(*member)
            st = os.stat(member[0])  # the shard's ctime and inode: a rewrite in place changes them
            ctime, inode = st.st_ctime_ns, st.st_ino
        else:
            found = stat_of(path)
            if found is None:  # a FIFO or device would block the read for the hash forever
                return None
            key, size, stamp, ctime, inode = found.key()
    except (OSError, MemberError):
        return None
    if not key.isascii() and not _utf8(key):  # SQLite text is UTF-8: a name that is not is never stored
        return None
    return key, size, stamp, ctime, inode


@dataclass
class ImageStore:
    """Picklable handle: each process and thread opens its own connection on first use."""

    db_path: str
    fingerprint: str
    variant: str

    def __post_init__(self) -> None:
        self._local = threading.local()

    def __getstate__(self) -> dict:
        return {"db_path": self.db_path, "fingerprint": self.fingerprint, "variant": self.variant}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._local = threading.local()

    @classmethod
    def open(cls, cache: Cache, fingerprint: str, variant: str) -> ImageStore | None:
        """A store in the cache's file; None when the cache cannot be written (it then lives in memory only)."""
        if not cache.persistent:  # also creates the file and its tables before any worker reads it
            return None
        return cls(str(cache.path), fingerprint, variant)

    @property
    def conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid() and replaced(self._local, self.db_path):
            conn.close()  # the cache file was deleted or replaced (zsclip.store.cache.replaced): open the new one
            conn = None
        if conn is None or self._local.pid != os.getpid():  # never use a connection inherited through fork
            self._local.pid = os.getpid()
            # Through the cache, so a file made anew since (deleted, then recreated) has its tables.
            conn = self._local.conn = Cache(os.path.dirname(self.db_path)).connect()
            self._local.file, self._local.checked = file_id(self.db_path), time.monotonic()
        return conn

    def close(self) -> None:
        """Close this thread's connection (others close when their thread or process ends)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and getattr(self._local, "pid", None) == os.getpid():
            conn.close()
        self._local.conn = None

    def lookup(self, path: str) -> tuple[np.ndarray | None, FileIdentity | None]:
        """(vector, identity): a stored vector for this file if any; the identity to record when it must be
        (re)stored, None when the stored row already matches. A shard member (SHARD.tar#MEMBER) is keyed by its
        address, its size and a stamp of the shard's stat identity and the member's offset (zsclip.store.shards), and
        found by the hash of its bytes otherwise, as a file is."""
        found = stat_key(path)
        if found is None:
            return None, None
        key, size, stamp, ctime, inode = found
        row = self.conn.execute(
            "SELECT vector FROM image_embeddings WHERE fingerprint = ? AND variant = ? AND path = ? "
            "AND size = ? AND mtime_ns = ? AND ctime_ns = ? AND inode = ?",
            (self.fingerprint, self.variant, key, size, stamp, ctime, inode),
        ).fetchall()  # fetchall: a statement left unfinished would hold a read snapshot and stall WAL checkpoints
        if row:
            return np.frombuffer(row[0][0], dtype=np.float32), None
        member = is_member(path)
        try:
            hashed = digest(read_member(*member)) if member is not None else content_hash(path)
        except (OSError, MemberError):
            return None, None
        identity = FileIdentity(key, size, stamp, hashed, ctime, inode)
        row = self.conn.execute(
            # INDEXED BY: without statistics SQLite would rather scan the model's rows by primary-key prefix,
            # which made every new file cost O(stored files) (measured: 20x slower by 25,000 images).
            "SELECT vector FROM image_embeddings INDEXED BY image_by_hash "
            "WHERE content_hash = ? AND fingerprint = ? AND variant = ? LIMIT 1",
            (identity.content_hash, self.fingerprint, self.variant),
        ).fetchall()
        return (np.frombuffer(row[0][0], dtype=np.float32) if row else None), identity

    def lookup_by_stat(self, path: str) -> tuple[np.ndarray | None, tuple | None]:
        """(vector, stat key): a stored vector for this file's full stat identity (path, size, mtime, ctime, inode),
        found without reading the file (the Ray engine's driver: content hashes are taken where the bytes are
        read, on the cluster). The stat key (see stat_key) is None for what the store never holds (not a regular
        local file, a name that is not UTF-8); the driver records it with the vector the cluster returns."""
        found = stat_key(path) if not is_member(path) else None
        if found is None:
            return None, None
        row = self.conn.execute(
            "SELECT vector FROM image_embeddings WHERE fingerprint = ? AND variant = ? AND path = ? "
            "AND size = ? AND mtime_ns = ? AND ctime_ns = ? AND inode = ?",
            (self.fingerprint, self.variant, *found),
        ).fetchall()
        return (np.frombuffer(row[0][0], dtype=np.float32) if row else None), found

    def try_put(self, rows: list[tuple[FileIdentity, np.ndarray]]) -> bool:
        """put(); False (after one warning) when the disk is full or the cache turned read-only, so the run goes on
        without storing (what was stored stays)."""
        try:
            self.put(rows)
        except (sqlite3.OperationalError, OSError) as exc:
            if is_disk_full(exc):
                why = f"the disk holding the cache ({self.db_path}) is full ({exc})"
            elif "readonly" in str(exc):  # made read-only during the run (remounted, permissions changed)
                why = f"the cache {self.db_path} cannot be written ({exc})"
            else:
                raise
            log(
                f"warning: {why}; image embeddings are no longer stored in this run, those stored so far are kept. "
                "Free space or set ZSCLIP_CACHE_DIR."
            )
            return False
        return True

    def put(self, rows: list[tuple[FileIdentity, np.ndarray]]) -> None:
        if not rows:
            return
        values = [
            (
                self.fingerprint,
                self.variant,
                i.path,
                i.size,
                i.mtime_ns,
                i.content_hash,
                np.asarray(v, dtype=np.float32).tobytes(),
                i.ctime_ns,
                i.inode,
            )
            for i, v in rows
        ]
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.executemany(
                "INSERT OR REPLACE INTO image_embeddings "
                "(fingerprint, variant, path, size, mtime_ns, content_hash, vector, ctime_ns, inode) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                values,
            )
