"""The zsclip cache: one directory, one SQLite file (WAL) holding text embeddings and file hashes.

Every vector is keyed by what produced it: model fingerprint, precision and the exact prompt text. SQLite gives
atomic transactions and safe concurrent readers; a file that is corrupt or from another schema is moved aside and
rebuilt, so a damaged cache costs a re-encode, never a failed run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sqlite3
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import platformdirs

from zsclip.core.errors import UsageError, ZsclipError, is_disk_full
from zsclip.store.identity import made_from_of

SCHEMA_VERSION = 4  # 2: image_embeddings; 3: content-hash index led by the hash; 4: ctime + inode, model info
DB_NAME = "zsclip.sqlite"
# SQLite allows at most 999 bound parameters per statement in older builds.
_CHUNK = 900
_SCAN_ABOVE = 5000
_WARNED: set[str] = set()  # cache directories warned about in this process
# The cache directory's other parts, each kept by its own module, and what `cache info` calls them.
PARTS = {
    "onnx": "ONNX exports",  # zsclip.backends.exports
    "search": "search snapshots",  # zsclip.store.snapshots
    "thumbs": "serve thumbnails",  # zsclip.pipeline.thumbs
    "datasets": "downloaded data sets",  # zsclip.datasets.named
}
DERIVED = ("onnx", "search", "thumbs")  # what `cache clear` removes with the vectors; data sets are inputs

_SCHEMA = """
CREATE TABLE IF NOT EXISTS text_embeddings (
    fingerprint TEXT NOT NULL,
    precision   TEXT NOT NULL,
    prompt      TEXT NOT NULL,
    vector      BLOB NOT NULL,
    PRIMARY KEY (fingerprint, precision, prompt)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS models (
    fingerprint TEXT PRIMARY KEY,
    spec        TEXT NOT NULL,
    last_used   REAL NOT NULL,
    info        TEXT  -- JSON: logit scale, preprocessing, metadata (what a fully cached run needs, see models.py)
);
CREATE TABLE IF NOT EXISTS image_embeddings (
    fingerprint  TEXT NOT NULL,
    variant      TEXT NOT NULL,  -- precision + preprocessing: anything else that changes the numbers
    path         TEXT NOT NULL,
    size         INTEGER NOT NULL,
    mtime_ns     INTEGER NOT NULL,
    content_hash TEXT NOT NULL,
    vector       BLOB NOT NULL,
    ctime_ns     INTEGER NOT NULL DEFAULT -1,
    inode        INTEGER NOT NULL DEFAULT -1,
    PRIMARY KEY (fingerprint, variant, path)
) WITHOUT ROWID;
DROP INDEX IF EXISTS image_by_content;
CREATE INDEX IF NOT EXISTS image_by_hash ON image_embeddings (content_hash, fingerprint, variant);
CREATE TABLE IF NOT EXISTS file_hashes (
    path     TEXT PRIMARY KEY,
    size     INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256   TEXT NOT NULL,
    ctime_ns INTEGER NOT NULL DEFAULT -1,
    inode    INTEGER NOT NULL DEFAULT -1
);
"""
# Version 3 files gain the version 4 columns. Their rows keep -1 for ctime and inode, which never matches a file,
# so the first lookup falls through to the content hash (images) or hashes the file again (weights).
_MIGRATE_4 = [
    ("models", "info", "TEXT"),
    ("image_embeddings", "ctime_ns", "INTEGER NOT NULL DEFAULT -1"),
    ("image_embeddings", "inode", "INTEGER NOT NULL DEFAULT -1"),
    ("file_hashes", "ctime_ns", "INTEGER NOT NULL DEFAULT -1"),
    ("file_hashes", "inode", "INTEGER NOT NULL DEFAULT -1"),
]


def cache_dir() -> Path:
    """The cache directory: $ZSCLIP_CACHE_DIR, else the platform's user cache directory."""
    env = os.environ.get("ZSCLIP_CACHE_DIR")
    return Path(env).expanduser() if env else Path(platformdirs.user_cache_dir("zsclip"))


@dataclass(frozen=True)
class ModelEntry:
    fingerprint: str
    spec: str
    text_vectors: int
    image_vectors: int
    bytes: int


class Cache:
    """Text-embedding cache and file-hash memo in `<cache_dir>/zsclip.sqlite`."""

    def __init__(self, directory: Path | str | None = None):
        self.directory = Path(directory) if directory is not None else cache_dir()
        self.path = self.directory / DB_NAME
        # One connection per thread and process: an sqlite3 connection may only be used by the thread that made it
        # (serve answers in threads; the ONNX exports a request uses hash their files through this cache).
        self._local = threading.local()
        self._in_memory = ""  # why the cache lives in memory, when it does

    @property
    def _conn(self) -> sqlite3.Connection | None:
        if getattr(self._local, "pid", None) != os.getpid():  # never use a connection inherited through fork
            return None
        conn = getattr(self._local, "conn", None)
        if conn is not None and not self._in_memory and replaced(self._local, self.path):
            conn.close()  # the file was deleted or replaced: its locks and WAL are let go, the new file opened
            self._local.conn = conn = None
        return conn

    @_conn.setter
    def _conn(self, conn: sqlite3.Connection | None) -> None:
        self._local.conn, self._local.pid = conn, os.getpid()
        self._local.file, self._local.checked = file_id(self.path), time.monotonic()

    def __getstate__(self) -> dict:
        return {"directory": self.directory, "path": self.path, "_in_memory": self._in_memory}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._local = threading.local()

    # -- connection ---------------------------------------------------------------------------------------
    @property
    def conn(self) -> sqlite3.Connection:
        """The connection; a cache directory that cannot be written gives a private in-memory cache instead, with
        one warning, so a run still works, only without caching."""
        if self._conn is None:
            self._conn = self._open(fallback=True)
        return self._conn

    @property
    def persistent(self) -> bool:
        """False when the cache fell back to memory: nothing is kept after the run, and workers cannot share it."""
        _ = self.conn  # opening it decides
        if self._in_memory:
            self._warn(self._in_memory)
        return not self._in_memory

    def _open(self, fallback: bool) -> sqlite3.Connection:
        if self.directory.exists() and not self.directory.is_dir():
            raise UsageError(
                f"the cache folder {self.directory} is a file: set ZSCLIP_CACHE_DIR to a folder (or remove the file)"
            )
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            return self._connect()
        except (OSError, sqlite3.OperationalError) as exc:  # locked, I/O error, disk full, read-only
            if self._read_only():
                reason = f"{self.directory} is read-only ({_reason(exc)})"
                if not fallback:
                    raise ZsclipError(
                        f"cannot use the cache: {reason}; make it writable or set ZSCLIP_CACHE_DIR to another directory"
                    ) from exc
                # Warned at the first write (see _write), so a command that only reads or fails says one thing.
                self._in_memory = f"{reason}; going on without caching. Make it writable or set ZSCLIP_CACHE_DIR."
                return self._connect(":memory:")
            raise ZsclipError(
                f"cannot open the cache {self.path} ({_reason(exc)}); "
                + ("free disk space or " if is_disk_full(exc) else "")
                + "set ZSCLIP_CACHE_DIR to another directory"
            ) from exc
        except sqlite3.DatabaseError as exc:  # not a database, malformed, or a newer schema
            moved = self.path.with_name(f"{DB_NAME}.corrupt-{int(time.time())}")
            print(
                f"warning: cache {self.path} is unreadable ({exc}); moved it to {moved} and starting a new one",
                file=sys.stderr,
            )
            for suffix in ("", "-wal", "-shm"):
                src = Path(str(self.path) + suffix)
                if src.exists():
                    src.replace(Path(str(moved) + suffix))
            return self._connect()

    def _read_only(self) -> bool:
        """Whether the cache cannot be written: a read-only file system, or no write permission on the directory
        (or the first missing directory up the path) or on the database file."""
        existing = self.directory
        while not existing.exists() and existing.parent != existing:
            existing = existing.parent
        if not os.access(existing, os.W_OK):  # access() reports EROFS even to root
            return True
        return self.path.exists() and not os.access(self.path, os.W_OK)

    def _warn(self, message: str) -> None:
        """Once per cache directory and process: a run opens the cache in several places."""
        if str(self.directory) not in _WARNED:
            _WARNED.add(str(self.directory))
            print(f"warning: cache: {message}", file=sys.stderr)

    def _connect(self, target: Path | str | None = None) -> sqlite3.Connection:
        # Two processes opening a new cache at once: switching it to WAL or making its tables can be refused as
        # "locked" at once, without the busy timeout (SQLite avoids a deadlock there); the setup is tried again.
        deadline = time.monotonic() + 60
        while True:
            try:
                return self._set_up(target)
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _set_up(self, target: Path | str | None) -> sqlite3.Connection:
        conn = sqlite3.connect(target or self.path, timeout=60, isolation_level=None)
        try:
            conn.execute("PRAGMA busy_timeout = 60000")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise sqlite3.DatabaseError(f"schema version {version}, newer than this zsclip's {SCHEMA_VERSION}")
            if version < SCHEMA_VERSION:  # every table is CREATE IF NOT EXISTS, so older files just gain tables
                conn.executescript(_SCHEMA)
                with conn:  # one writer at a time checks and adds the columns
                    conn.execute("BEGIN IMMEDIATE")
                    for table, column, decl in _MIGRATE_4:
                        have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
                        if column not in have:
                            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
                    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            # Touch a table so a file that is not a database fails here, not mid-run.
            conn.execute("SELECT count(*) FROM models").fetchone()
        except sqlite3.DatabaseError:
            conn.close()
            raise
        return conn

    def connect(self) -> sqlite3.Connection:
        """A new connection to the cache file, its tables made if it is new (the image store's, one per thread)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        return self._connect()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- text embeddings ----------------------------------------------------------------------------------
    def get_text(self, fingerprint: str, precision: str, prompts: Sequence[str]) -> dict[str, np.ndarray]:
        """The cached vectors for those prompts that have one."""
        found: dict[str, np.ndarray] = {}
        if len(prompts) > _SCAN_ABOVE:
            # Many prompts (e.g. 1000 classes x 80 templates): one range scan of the model's rows beats tens of
            # thousands of point lookups.
            wanted = set(prompts)
            rows = self.conn.execute(
                "SELECT prompt, vector FROM text_embeddings WHERE fingerprint = ? AND precision = ?",
                (fingerprint, precision),
            )
            for prompt, blob in rows:
                if prompt in wanted:
                    found[prompt] = np.frombuffer(blob, dtype=np.float32)
            return found
        for start in range(0, len(prompts), _CHUNK):
            chunk = list(prompts[start : start + _CHUNK])
            marks = ",".join("?" * len(chunk))
            rows = self.conn.execute(
                f"SELECT prompt, vector FROM text_embeddings WHERE fingerprint = ? AND precision = ? "
                f"AND prompt IN ({marks})",
                [fingerprint, precision, *chunk],
            )
            for prompt, blob in rows:
                found[prompt] = np.frombuffer(blob, dtype=np.float32)
        return found

    def put_text(self, fingerprint: str, precision: str, vectors: Iterable[tuple[str, np.ndarray]]) -> None:
        rows = [(fingerprint, precision, p, np.asarray(v, dtype=np.float32).tobytes()) for p, v in vectors]
        self._write("INSERT OR REPLACE INTO text_embeddings VALUES (?, ?, ?, ?)", rows)

    def remember_model(self, fingerprint: str, spec: str, info: dict | None = None) -> None:
        """Note that `spec` was used (for `cache info`), with what a later run needs to skip loading it."""
        if info is None:
            self._write(
                "INSERT INTO models (fingerprint, spec, last_used) VALUES (?, ?, ?) ON CONFLICT (fingerprint) "
                "DO UPDATE SET spec = excluded.spec, last_used = excluded.last_used",
                [(fingerprint, spec, time.time())],
            )
        else:
            try:
                text = json.dumps(info, sort_keys=True)
            except (TypeError, ValueError):  # a config value JSON cannot hold: this model always loads eagerly
                return self.remember_model(fingerprint, spec)
            self._write(
                "INSERT OR REPLACE INTO models (fingerprint, spec, last_used, info) VALUES (?, ?, ?, ?)",
                [(fingerprint, spec, time.time(), text)],
            )

    def model_info(self, fingerprint: str) -> dict | None:
        """What `remember_model` stored for these weights, or None."""
        row = self.conn.execute("SELECT info FROM models WHERE fingerprint = ?", (fingerprint,)).fetchall()
        if not row or not row[0][0]:
            return None
        try:
            return json.loads(row[0][0])
        except ValueError:  # a damaged row costs one model load, which writes it again
            return None

    def _write(self, sql: str, rows: list[tuple], quiet: bool = False) -> bool:
        """One transaction; on a full disk or a cache that turned read-only, a warning (once) and False: the run
        goes on, uncached, and nothing written before is lost (the transaction rolls back whole). `quiet`: no
        warning for a cache in memory (a memo of no use to the user)."""
        if self._in_memory and not quiet:
            self._warn(self._in_memory)
        try:
            with self.conn:
                self.conn.execute("BEGIN IMMEDIATE")
                self.conn.executemany(sql, rows)
        except sqlite3.OperationalError as exc:
            if is_disk_full(exc):
                self._warn(
                    f"cannot write {self.path} ({exc}): the disk is full or failing; going on without caching. "
                    "Free space or set ZSCLIP_CACHE_DIR."
                )
            elif "readonly" in str(exc) or self._read_only():
                self._warn(
                    f"cannot write {self.path} ({exc}); going on without caching. Make it writable or set "
                    "ZSCLIP_CACHE_DIR."
                )
            else:
                raise
            return False
        return True

    # -- maintenance --------------------------------------------------------------------------------------
    def info(self) -> list[ModelEntry]:
        """Entries and bytes per model fingerprint."""
        rows = self._maintained().execute(
            "SELECT f.fingerprint, coalesce(m.spec, ''), "
            "  (SELECT count(*) FROM text_embeddings t WHERE t.fingerprint = f.fingerprint), "
            "  (SELECT count(*) FROM image_embeddings i WHERE i.fingerprint = f.fingerprint), "
            "  (SELECT coalesce(sum(length(vector)), 0) FROM text_embeddings t WHERE t.fingerprint = f.fingerprint) "
            "  + (SELECT coalesce(sum(length(vector)), 0) FROM image_embeddings i WHERE i.fingerprint = f.fingerprint) "
            "FROM (SELECT fingerprint FROM text_embeddings UNION SELECT fingerprint FROM image_embeddings) f "
            "LEFT JOIN models m USING (fingerprint) ORDER BY f.fingerprint"
        )
        return [ModelEntry(*row) for row in rows]

    def clear(self, fingerprint: str | None = None) -> tuple[int, int]:
        """Delete cached vectors (all, or one model's); returns how many (text, image) vectors were removed."""
        self._maintained()
        try:
            return self._clear(fingerprint)
        except sqlite3.OperationalError as exc:
            if "readonly" in str(exc) or self._read_only():
                raise ZsclipError(f"cannot clear the cache {self.path} ({exc}): make it writable") from exc
            raise

    def _maintained(self) -> sqlite3.Connection:
        """The on-disk cache, for `cache info` and `cache clear`: a cache that cannot be opened is an error here,
        not an empty in-memory stand-in."""
        if self._conn is None:
            self._conn = self._open(fallback=False)
        elif self._in_memory:
            raise ZsclipError(
                f"cannot use the cache: {self.directory} is read-only; make it writable or set ZSCLIP_CACHE_DIR"
            )
        return self._conn

    def _clear(self, fingerprint: str | None) -> tuple[int, int]:
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            if fingerprint is None:
                n = self.conn.execute("DELETE FROM text_embeddings").rowcount
                m = self.conn.execute("DELETE FROM image_embeddings").rowcount
                self.conn.execute("DELETE FROM models")
            else:
                n = self.conn.execute("DELETE FROM text_embeddings WHERE fingerprint = ?", (fingerprint,)).rowcount
                m = self.conn.execute("DELETE FROM image_embeddings WHERE fingerprint = ?", (fingerprint,)).rowcount
                self.conn.execute("DELETE FROM models WHERE fingerprint = ?", (fingerprint,))
        if fingerprint is None:
            self.conn.execute("VACUUM")
            for part in DERIVED:  # made from the vectors or the weights: remade on demand
                shutil.rmtree(self.directory / part, ignore_errors=True)
        else:
            for folder in self.exports_of(fingerprint):
                shutil.rmtree(folder, ignore_errors=True)
        return n, m

    def size_bytes(self) -> int:
        """The SQLite file's bytes (text and image vectors, file hashes)."""
        return sum(p.stat().st_size for p in self.directory.glob(DB_NAME + "*") if p.is_file())

    def disk_usage(self) -> dict[str, int]:
        """Bytes on disk of each part of the cache directory: "embeddings" (the SQLite file) and each of PARTS."""
        return {"embeddings": self.size_bytes(), **{part: tree_bytes(self.directory / part) for part in PARTS}}

    def exports(self) -> list[tuple[str, str, Path]]:
        """(fingerprint, spec, folder) of every ONNX export folder (zsclip.backends.exports), of any export version."""
        import json

        found = []
        for meta in sorted((self.directory / "onnx").glob("*/export.json")):
            fingerprint = (made_from_of(meta, "onnx export") or {}).get("fingerprint")
            if fingerprint:
                with contextlib.suppress(OSError, ValueError):
                    found.append(
                        (fingerprint, str(json.loads(meta.read_text(encoding="utf-8")).get("spec")), meta.parent)
                    )
        return found

    def exports_of(self, fingerprint: str) -> list[Path]:
        """The ONNX export folders of a model."""
        return [folder for found, _, folder in self.exports() if found == fingerprint]

    # -- file hashes --------------------------------------------------------------------------------------
    def file_sha256(self, path: Path | str) -> str:
        """sha256 of a file, memoised by (path, size, mtime, ctime, inode) so large weights are hashed once.

        ctime and inode catch what size and mtime miss: a file rewritten with its old mtime put back (`touch -r`,
        archive tools) has a new ctime, and one replaced by rename has a new inode."""
        path = Path(path).resolve()
        st = path.stat()
        key = (str(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
        row = self.conn.execute(
            "SELECT sha256 FROM file_hashes WHERE path = ? AND size = ? AND mtime_ns = ? AND ctime_ns = ? "
            "AND inode = ?",
            key,
        ).fetchall()
        if row:
            return row[0][0]
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                digest.update(block)
        sha = digest.hexdigest()
        self._write(
            "INSERT OR REPLACE INTO file_hashes (path, size, mtime_ns, ctime_ns, inode, sha256) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [(*key, sha)],
            quiet=True,
        )
        return sha


# How often a long-lived connection checks that the database file is still the one it opened (a stat).
RECHECK_SECONDS = 1.0


def file_id(path: Path | str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def replaced(local, path: Path | str) -> bool:
    """Whether the database file `local`'s connection opened has been deleted or replaced since (checked at most
    every RECHECK_SECONDS): a long-running serve kept writing into a deleted file's WAL, losing its work, while
    every other command waited on its lock and failed."""
    now = time.monotonic()
    if now - getattr(local, "checked", 0.0) < RECHECK_SECONDS:
        return False
    local.checked = now
    return file_id(path) != getattr(local, "file", None)


def tree_bytes(folder: Path) -> int:
    """Bytes of the files under `folder` (0 if it is missing)."""
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):  # removed meanwhile
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def _reason(exc: BaseException) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
