"""The image-embedding store as one searchable matrix: a snapshot of a model's vectors, sorted by path, on disk.

Searching the SQLite rows directly would read every blob through SQLite on every query (seconds at 1M vectors).
Instead the rows of one (fingerprint, variant) are copied once into a flat float32 file that queries memory-map,
with the paths beside it in sorted order, so "images under this folder" is a contiguous row range found by
binary search, and each row's file identity (size, mtime, ctime, inode as stored), so a hit whose file has
changed since it was stored is never served. A change counter kept by SQLite triggers (any writer, any process:
classify, index, cache clear) tells when a snapshot is stale; it is then rebuilt whole on the next search. The
pointer to the current snapshot is a state file (zsclip.store.identity) naming the generation it was made from and the
sizes of its files: a snapshot that is damaged (a truncated file) is rebuilt with a warning, never read. Exact
search scores the rows in chunks of a fixed memory budget and keeps the top k of each chunk by partial sort.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import mmap
import os
import shutil
import sqlite3
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zsclip.core.errors import UsageError
from zsclip.core.progress import log
from zsclip.store.cache import Cache
from zsclip.store.embeddings import stat_key
from zsclip.store.identity import StateError, read_state, write_state

DEFAULT_BUDGET = 64 * 1024 * 1024  # bytes of vectors scored at once
_TRIGGERS = ("zsclip_image_added", "zsclip_image_removed")
_GENERATION_SQL = f"""
CREATE TABLE IF NOT EXISTS image_generation (
    fingerprint TEXT NOT NULL,
    variant     TEXT NOT NULL,
    generation  INTEGER NOT NULL,
    PRIMARY KEY (fingerprint, variant)
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS {_TRIGGERS[0]} AFTER INSERT ON image_embeddings BEGIN
    INSERT INTO image_generation VALUES (NEW.fingerprint, NEW.variant, abs(random() % 1000000000000))
    ON CONFLICT (fingerprint, variant) DO UPDATE SET generation = generation + 1;
END;
CREATE TRIGGER IF NOT EXISTS {_TRIGGERS[1]} AFTER DELETE ON image_embeddings BEGIN
    INSERT INTO image_generation VALUES (OLD.fingerprint, OLD.variant, abs(random() % 1000000000000))
    ON CONFLICT (fingerprint, variant) DO UPDATE SET generation = generation + 1;
END;
"""
# A random start: a cache file that was rebuilt from scratch never repeats the generation a snapshot recorded.


def ensure_generation(conn: sqlite3.Connection) -> bool:
    """Create the change counter and its triggers if missing; True if they were already there (a table rebuilt
    by a schema change loses its triggers, and writes made meanwhile were not counted)."""
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall()}
    if all(t in names for t in _TRIGGERS):
        return True
    conn.executescript(_GENERATION_SQL)
    return False


def generation(conn: sqlite3.Connection, fingerprint: str, variant: str) -> int | None:
    row = conn.execute(
        "SELECT generation FROM image_generation WHERE fingerprint = ? AND variant = ?", (fingerprint, variant)
    ).fetchall()
    return row[0][0] if row else None


class PathList(Sequence):
    """The snapshot's sorted paths, read on demand from a memory-mapped file (no million Python strings)."""

    def __init__(self, blob: bytes | mmap.mmap, offsets: np.ndarray):
        self.blob, self.offsets = blob, offsets

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return bytes(self.blob[int(self.offsets[i]) : int(self.offsets[i + 1])]).decode("utf-8", "surrogateescape")


@dataclass
class Snapshot:
    vectors: np.ndarray  # [N, dim] float32, memory-mapped, rows in path order
    paths: PathList
    folder: Path | None = None  # where it lives (the approximate index is kept beside it)
    stats: np.ndarray | None = None  # [N, 4] int64: the stored size, mtime (or stamp), ctime, inode of each row

    def __len__(self) -> int:
        return len(self.paths)

    def current(self, row: int) -> bool:
        """Whether the file of `row` is still the one whose vector was stored (zsclip.store.identity's stat rule): a
        file changed since (and not indexed again, as one that no longer decodes) or gone is not."""

        now = stat_key(self.paths[row])
        if now is None:
            return False
        return self.stats is None or tuple(int(v) for v in self.stats[row]) == now[1:]

    def ranges(self, roots: Sequence[tuple[str, bool]] | None, recursive: bool = True) -> list[tuple[int, int]]:
        """Row ranges [lo, hi) of the files under these absolute (path, is_file) roots; all rows for None.
        Not `recursive`: only the files directly in a root folder (runs of rows between its subfolders')."""
        if roots is None:
            return [(0, len(self))] if len(self) else []
        spans = []
        for root, is_file in roots:
            if is_file:
                lo = bisect.bisect_left(self.paths, root)
                hi = lo + 1 if lo < len(self) and self.paths[lo] == root else lo
            else:
                base = root.rstrip("/")
                lo = bisect.bisect_left(self.paths, base + "/")
                hi = bisect.bisect_left(self.paths, base + "0")  # "0" follows "/": just past every "base/..."
                if not recursive:
                    spans += _direct_children(self.paths, lo, hi, len(base) + 1)
                    continue
            if hi > lo:
                spans.append((lo, hi))
        merged: list[tuple[int, int]] = []
        for lo, hi in sorted(spans):
            if merged and lo <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
            else:
                merged.append((lo, hi))
        return merged


def _direct_children(paths: Sequence[str], lo: int, hi: int, start: int) -> list[tuple[int, int]]:
    """Runs of rows in [lo, hi) whose path has no "/" after position `start` (files directly in the folder)."""
    runs: list[tuple[int, int]] = []
    for row in range(lo, hi):
        if "/" not in paths[row][start:]:
            if runs and runs[-1][1] == row:
                runs[-1] = (runs[-1][0], row + 1)
            else:
                runs.append((row, row + 1))
    return runs


def top_k(
    vectors: np.ndarray, query: np.ndarray, k: int, ranges: list[tuple[int, int]], budget: int = DEFAULT_BUDGET
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k rows by dot product with `query`: (row indices, scores), best first (ties: lower row first).

    Scores `budget` bytes of rows at a time (single-threaded) and keeps each chunk's top k by argpartition, so
    memory stays at one chunk plus 2k candidates whatever the number of rows."""
    dim = vectors.shape[1] if vectors.ndim == 2 else len(query)
    step = max(1, budget // (4 * max(1, dim)))
    query = np.ascontiguousarray(query, dtype=np.float32)
    best_idx = np.empty(0, dtype=np.int64)
    best_score = np.empty(0, dtype=np.float32)
    for lo, hi in ranges:
        for start in range(lo, hi, step):
            end = min(hi, start + step)
            # einsum, not `@`: one query is a matrix-vector product bound by memory bandwidth, and OpenBLAS's
            # threaded sgemv waited ~30 ms on thread hand-offs per call on a busy 2-core machine (einsum: 0.15 ms
            # for 5,000 rows; measured in bench/search.py).
            scores = np.einsum("ij,j->i", vectors[start:end], query)
            keep = np.argpartition(-scores, k - 1)[:k] if len(scores) > k else np.arange(len(scores))
            best_idx = np.concatenate([best_idx, keep + start])
            best_score = np.concatenate([best_score, scores[keep]])
            if len(best_idx) > k:
                keep = np.argpartition(-best_score, k - 1)[:k]
                best_idx, best_score = best_idx[keep], best_score[keep]
    order = np.lexsort((best_idx, -best_score))
    return best_idx[order], best_score[order]


# -- the snapshot on disk ----------------------------------------------------------------------------------
def _key(fingerprint: str, variant: str) -> str:
    return hashlib.sha256(f"{fingerprint}\0{variant}".encode()).hexdigest()[:24]


KIND = "search snapshot"
_FILES = ("vectors.f32", "paths.bin", "offsets.npy", "stats.npy")


def load(cache: Cache, fingerprint: str, variant: str) -> Snapshot:
    """The current snapshot of this model's stored vectors, rebuilt first if the store changed since or the
    snapshot on disk is damaged."""
    root = cache.directory / "search"
    pointer = root / f"{_key(fingerprint, variant)}.json"
    conn = cache.conn
    counted = ensure_generation(conn)
    made_from = {"fingerprint": fingerprint, "variant": variant, "generation": generation(conn, fingerprint, variant)}
    try:
        meta = read_state(pointer, KIND, made_from) if counted else None
    except StateError as exc:
        if not exc.stale and pointer.exists():
            log(f"warning: {exc}; rebuilding the search snapshot")
        meta = None
    folder = root / meta["folder"] if meta else None
    opened = _OPENED.get(str(pointer))
    if folder is not None and opened is not None and opened[0] == folder and _intact(folder, meta, quiet=True):
        return opened[1]
    snapshot = _open(folder, meta) if folder is not None and _intact(folder, meta) else None
    if snapshot is None:
        folder = _build(conn, root, pointer, fingerprint, variant)
        meta = read_state(pointer, KIND)
        snapshot = _open(folder, meta)
        if snapshot is None:
            raise StateError(f"the search snapshot {folder} could not be read back after it was built")
    _OPENED[str(pointer)] = (folder, snapshot)
    return snapshot


# Snapshots this process has mapped, by pointer file: a fresh memory map faults every page in again on first
# touch (measured: 88 ms instead of 27 ms for 100k vectors), so later queries in the same process reuse it.
_OPENED: dict[str, tuple[Path, Snapshot]] = {}


def _intact(folder: Path, meta: dict, quiet: bool = False) -> bool:
    """The snapshot's files are there with the sizes recorded when it was built."""
    sizes = meta.get("sizes") or {}
    for name in _FILES:
        try:
            size = (folder / name).stat().st_size
        except OSError:
            size = None
        if size != sizes.get(name):
            if not quiet:
                log(f"warning: search snapshot {folder / name} is missing or damaged; rebuilding the snapshot")
            return False
    return True


def _build(conn: sqlite3.Connection, root: Path, pointer: Path, fingerprint: str, variant: str) -> Path:
    """Copy the rows, in path order, into a new folder; then point to it (readers of the old one are unharmed)."""
    root.mkdir(parents=True, exist_ok=True)
    folder = root / f"{pointer.stem}-{uuid.uuid4().hex[:12]}"
    folder.mkdir()
    count, dim = 0, 0
    conn.execute("BEGIN")  # one read snapshot: the generation recorded is the one of the rows copied
    try:
        gen = generation(conn, fingerprint, variant)
        rows = conn.execute(
            "SELECT path, vector, size, mtime_ns, ctime_ns, inode FROM image_embeddings "
            "WHERE fingerprint = ? AND variant = ? ORDER BY path",
            (fingerprint, variant),
        )
        offsets, stats = [0], []
        with open(folder / "vectors.f32", "wb") as vf, open(folder / "paths.bin", "wb") as pf:
            while chunk := rows.fetchmany(4096):
                for path, blob, *stat in chunk:
                    if dim == 0:
                        dim = len(blob) // 4
                    if len(blob) != 4 * dim:  # cannot happen within one variant; skip rather than misalign
                        continue
                    vf.write(blob)
                    raw = path.encode("utf-8", "surrogateescape")
                    pf.write(raw)
                    offsets.append(offsets[-1] + len(raw))
                    stats.append(stat)
                    count += 1
            for f in (vf, pf):
                f.flush()
                os.fsync(f.fileno())
        np.save(folder / "offsets.npy", np.asarray(offsets, dtype=np.int64))
        np.save(folder / "stats.npy", np.asarray(stats, dtype=np.int64).reshape(-1, 4))
    finally:
        conn.execute("COMMIT")
    old = (_read_json(pointer) or {}).get("folder")
    sizes = {name: (folder / name).stat().st_size for name in _FILES}
    made_from = {"fingerprint": fingerprint, "variant": variant, "generation": gen}
    write_state(pointer, KIND, made_from, {"folder": folder.name, "count": count, "dim": dim, "sizes": sizes})
    # The build this one replaces goes at once (open memory maps of it stay valid on POSIX); others left by
    # concurrent or killed builds once they are an hour old, so a process still writing one is left alone.
    for other in root.glob(f"{pointer.stem}-*"):
        if other != folder and (other.name == old or _age(other) > 3600):
            shutil.rmtree(other, ignore_errors=True)
    return folder


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0


def _open(folder: Path, meta: dict) -> Snapshot | None:
    """The snapshot in `folder`, memory-mapped; None when its files do not agree with each other."""
    count, dim = int(meta["count"]), int(meta["dim"])
    try:
        offsets = np.load(folder / "offsets.npy")
        stats = np.load(folder / "stats.npy")
        if len(offsets) != count + 1 or stats.shape != (count, 4):
            raise ValueError("row counts disagree")
        if count == 0:
            return Snapshot(np.zeros((0, max(dim, 1)), dtype=np.float32), PathList(b"", offsets), folder, stats)
        vectors = np.memmap(folder / "vectors.f32", dtype=np.float32, mode="r", shape=(count, dim))
        with open(folder / "paths.bin", "rb") as f:
            blob = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if offsets[-1] else b""
        if len(blob) != offsets[-1]:
            raise ValueError("paths.bin is cut short")
    except (OSError, ValueError) as exc:
        log(f"warning: search snapshot {folder} is damaged ({' '.join(str(exc).split())[:120]}); rebuilding it")
        return None
    return Snapshot(vectors, PathList(blob, offsets), folder, stats)


def stored_paths(conn: sqlite3.Connection, fingerprint: str, variant: str, roots: Sequence[tuple[str, bool]]):
    """The stored paths under these absolute (path, is_file) roots: a range scan of the primary key."""
    for root, is_file in roots:
        if is_file:
            yield from (
                r[0]
                for r in conn.execute(
                    "SELECT path FROM image_embeddings WHERE fingerprint = ? AND variant = ? AND path = ?",
                    (fingerprint, variant, root),
                ).fetchall()
            )
            continue
        base = root.rstrip("/")
        yield from (
            r[0]
            for r in conn.execute(
                "SELECT path FROM image_embeddings WHERE fingerprint = ? AND variant = ? AND path >= ? AND path < ?",
                (fingerprint, variant, base + "/", base + "0"),
            ).fetchall()
        )


def delete_paths(conn: sqlite3.Connection, fingerprint: str, variant: str, paths: Iterator[str] | list[str]) -> int:
    rows = [(fingerprint, variant, p) for p in paths]
    if not rows:
        return 0
    with conn:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("DELETE FROM image_embeddings WHERE fingerprint = ? AND variant = ? AND path = ?", rows)
    return len(rows)


# -- approximate search (optional: faiss) ------------------------------------------------------------------
APPROX_MIN_ROWS = 50_000  # below this, exact search is fast enough and an index is not worth building
_FAISS: dict[str, object] = {}


def approximate_top_k(
    snapshot: Snapshot, query: np.ndarray, k: int, ranges: list[tuple[int, int]], nprobe: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k by a faiss IVF index (inner product) kept beside the snapshot, built on first use; the candidates'
    scores are then recomputed exactly from the snapshot. Small snapshots are searched exactly."""
    if len(snapshot) < APPROX_MIN_ROWS or snapshot.folder is None:
        return top_k(snapshot.vectors, query, k, ranges)
    try:
        import faiss
    except ImportError:
        raise UsageError("approximate search needs faiss: pip install 'zsclip[faiss]' (or faiss-cpu)") from None
    index = _faiss_index(faiss, snapshot)
    lists = index.nlist
    selector, keep = None, []  # `keep`: the Python wrappers must stay alive until the search is done
    if ranges != [(0, len(snapshot))]:
        for lo, hi in ranges:
            part = faiss.IDSelectorRange(lo, hi)
            selector = part if selector is None else faiss.IDSelectorOr(selector, part)
            keep += [part, selector]
    params = faiss.SearchParametersIVF(nprobe=nprobe or max(1, lists // 20), sel=selector)
    _, ids = index.search(np.ascontiguousarray(query[None, :], dtype=np.float32), k, params=params)
    rows = np.sort(ids[0][ids[0] >= 0])
    scores = np.einsum("ij,j->i", snapshot.vectors[rows], query) if len(rows) else np.empty(0, np.float32)
    order = np.lexsort((rows, -scores))
    return rows[order], scores[order]


def _faiss_index(faiss, snapshot: Snapshot):
    """The IVF index of this snapshot: from this process, from disk (memory-mapped), or built and saved."""
    path = snapshot.folder / "faiss.index"
    index = _FAISS.get(str(path))
    if index is not None:
        return index
    if not path.is_file():
        n, dim = snapshot.vectors.shape
        lists = max(1, int(np.sqrt(n)))  # 1,000 lists at 1M vectors
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, lists, faiss.METRIC_INNER_PRODUCT)
        index.cp.niter = 10
        sample = np.sort(np.random.default_rng(0).choice(n, min(n, 40 * lists), replace=False))  # faiss asks >= 39
        index.train(np.ascontiguousarray(snapshot.vectors[sample]))
        step = max(1, DEFAULT_BUDGET // (4 * dim))
        for start in range(0, n, step):
            index.add(np.ascontiguousarray(snapshot.vectors[start : start + step]))
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        faiss.write_index(index, str(tmp))
        os.replace(tmp, path)
    index = _FAISS[str(path)] = faiss.read_index(str(path), faiss.IO_FLAG_MMAP)
    return index
