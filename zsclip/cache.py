"""The zsclip cache: one directory, one SQLite file (WAL) holding text embeddings and file hashes.

Every vector is keyed by what produced it: model fingerprint, precision and the exact prompt text. SQLite gives
atomic transactions and safe concurrent readers; a file that is corrupt or from another schema is moved aside and
rebuilt, so a damaged cache costs a re-encode, never a failed run.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import platformdirs

from .errors import ZsclipError, is_disk_full

SCHEMA_VERSION = 3  # 2: image_embeddings; 3: content-hash index led by the hash
DB_NAME = "zsclip.sqlite"
# SQLite allows at most 999 bound parameters per statement in older builds.
_CHUNK = 900
_SCAN_ABOVE = 5000

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
    last_used   REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS image_embeddings (
    fingerprint  TEXT NOT NULL,
    variant      TEXT NOT NULL,  -- precision + preprocessing: anything else that changes the numbers
    path         TEXT NOT NULL,
    size         INTEGER NOT NULL,
    mtime_ns     INTEGER NOT NULL,
    content_hash TEXT NOT NULL,
    vector       BLOB NOT NULL,
    PRIMARY KEY (fingerprint, variant, path)
) WITHOUT ROWID;
DROP INDEX IF EXISTS image_by_content;
CREATE INDEX IF NOT EXISTS image_by_hash ON image_embeddings (content_hash, fingerprint, variant);
CREATE TABLE IF NOT EXISTS file_hashes (
    path     TEXT PRIMARY KEY,
    size     INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256   TEXT NOT NULL
);
"""


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
        self._conn: sqlite3.Connection | None = None
        self._warned = False

    # -- connection ---------------------------------------------------------------------------------------
    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = self._open()
        return self._conn

    def _open(self) -> sqlite3.Connection:
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            return self._connect()
        except sqlite3.OperationalError as exc:  # locked, I/O error, disk full: the file itself may be fine
            raise ZsclipError(
                f"cannot open the cache {self.path} ({exc}); "
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

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        try:
            conn.execute("PRAGMA busy_timeout = 60000")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise sqlite3.DatabaseError(f"schema version {version}, newer than this zsclip's {SCHEMA_VERSION}")
            if version < SCHEMA_VERSION:  # every table is CREATE IF NOT EXISTS, so older files just gain tables
                conn.executescript(_SCHEMA)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            # Touch a table so a file that is not a database fails here, not mid-run.
            conn.execute("SELECT count(*) FROM models").fetchone()
        except sqlite3.DatabaseError:
            conn.close()
            raise
        return conn

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

    def remember_model(self, fingerprint: str, spec: str) -> None:
        self._write("INSERT OR REPLACE INTO models VALUES (?, ?, ?)", [(fingerprint, spec, time.time())])

    def _write(self, sql: str, rows: list[tuple]) -> bool:
        """One transaction; on a full disk, a warning (once) and False: the run goes on, uncached, and nothing
        written before is lost (the transaction rolls back whole)."""
        try:
            with self.conn:
                self.conn.execute("BEGIN IMMEDIATE")
                self.conn.executemany(sql, rows)
        except sqlite3.OperationalError as exc:
            if not is_disk_full(exc):
                raise
            if not self._warned:
                self._warned = True
                print(
                    f"warning: cannot write the cache {self.path} ({exc}): the disk is full or failing; going on "
                    "without caching. Free space or set ZSCLIP_CACHE_DIR.",
                    file=sys.stderr,
                )
            return False
        return True

    # -- maintenance --------------------------------------------------------------------------------------
    def info(self) -> list[ModelEntry]:
        """Entries and bytes per model fingerprint."""
        rows = self.conn.execute(
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
            shutil.rmtree(self.directory / "search", ignore_errors=True)  # search snapshots (zsclip.vectors)
        return n, m

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.directory.glob(DB_NAME + "*") if p.is_file())

    # -- file hashes --------------------------------------------------------------------------------------
    def file_sha256(self, path: Path | str) -> str:
        """sha256 of a file, memoised by (path, size, mtime) so large weights are hashed once."""
        path = Path(path).resolve()
        st = path.stat()
        row = self.conn.execute(
            "SELECT sha256 FROM file_hashes WHERE path = ? AND size = ? AND mtime_ns = ?",
            (str(path), st.st_size, st.st_mtime_ns),
        ).fetchall()
        if row:
            return row[0][0]
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                digest.update(block)
        sha = digest.hexdigest()
        self._write(
            "INSERT OR REPLACE INTO file_hashes VALUES (?, ?, ?, ?)", [(str(path), st.st_size, st.st_mtime_ns, sha)]
        )
        return sha
