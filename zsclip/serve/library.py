"""The photo folders `zsclip serve` answers for: indexed in the background through the same store and engine as
`zsclip index`, searched and classified from a snapshot of the store kept in memory.

One indexing thread at a time (at start, every `rescan` seconds, and on request) runs zsclip.retrieval.search.index over
the PATHs; after each pass the snapshot is loaded again and the rows of files under the PATHs that are still the
files whose vectors were stored are kept (zsclip.store.identity's rule), so a deleted or changed file is never served.
Requests run in threads of their own: each thread gets its own Cache (an sqlite connection belongs to its thread).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from zsclip.classify.predict import probabilities
from zsclip.classify.recheck import Recheck
from zsclip.core.errors import UsageError
from zsclip.engines import ReadOptions
from zsclip.photos.filters import PhotoFilter, allowed_rows, as_ranges
from zsclip.pipeline.encode import store_variant
from zsclip.pipeline.sources import count_candidates
from zsclip.retrieval.search import image_vector, index, query_vector
from zsclip.store import snapshots
from zsclip.store.cache import Cache
from zsclip.zeroshot.classifier import build_classifier
from zsclip.zeroshot.prompts import list_template_sets

if TYPE_CHECKING:
    from zsclip.models import ClipModel
    from zsclip.zeroshot.classifier import Classifier


@dataclass
class Progress:
    scanning: bool = False
    total: int = 0  # candidate files under the PATHs in this pass
    done: int = 0  # of them, indexed or skipped so far
    skipped: int = 0
    passes: int = 0
    last_pass: float | None = None  # time.time() of the last finished pass
    error: str | None = None
    counts: dict = field(default_factory=dict)  # the last pass's IndexResult.to_dict()


class Library:
    """The served folders: `roots` are real absolute paths of folders (or single images)."""

    def __init__(
        self, model: ClipModel, roots: list[str], cache_dir: str | None = None, read: ReadOptions | None = None
    ):

        self.model = model
        self.roots = [os.path.realpath(r) for r in roots]
        self.sources = [(r, os.path.isfile(r)) for r in self.roots]
        self.cache_dir = cache_dir
        self.read = read or ReadOptions()
        self.variant = store_variant(model, self.read.exact)
        self.progress = Progress()
        self.rows = np.empty(0, dtype=np.int64)  # snapshot rows served: under the roots, and current
        self.snapshot: snapshots.Snapshot | None = None
        self._local = threading.local()
        self._scan_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- caches, one per thread ---------------------------------------------------------------------------
    @property
    def cache(self) -> Cache:
        if getattr(self._local, "cache", None) is None:
            self._local.cache = Cache(self.cache_dir)
        return self._local.cache

    # -- indexing -------------------------------------------------------------------------------------------
    def start(self, rescan: float | None) -> None:
        """Index now in a background thread, then again every `rescan` seconds (None: only on request)."""

        def loop():
            while not self._stop.is_set():
                self.scan()
                self._wake.wait(rescan)
                self._wake.clear()

        self._thread = threading.Thread(target=loop, name="zsclip-index", daemon=True)
        self._thread.start()

    def request_scan(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def scan(self) -> None:
        """One indexing pass over the roots, then the in-memory snapshot refreshed."""

        if not self._scan_lock.acquire(blocking=False):
            return
        p = self.progress
        try:
            p.scanning, p.done, p.skipped, p.error = True, 0, 0, None
            p.total = count_candidates(self.sources, self.read.recursive)

            def on_batch(indexed: int, skipped: int) -> None:
                p.done += indexed + skipped
                p.skipped += skipped

            result = index(self.model, self.sources, self.read, cache=self.cache, on_batch=on_batch)
            p.counts = result.to_dict()
        except Exception as e:  # the server keeps serving what it has; the page shows why the pass failed
            p.error = f"{type(e).__name__}: {e}" if not str(e).startswith("--") else str(e)
        finally:
            with contextlib.suppress(Exception):
                self.refresh()
            p.scanning, p.passes, p.last_pass = False, p.passes + 1, time.time()
            self._scan_lock.release()

    def refresh(self) -> None:
        """Load the store's snapshot and keep the rows served: under the roots and unchanged since stored."""
        snapshot = snapshots.load(self.cache, self.model.fingerprint, self.variant)
        ranges = snapshot.ranges(self.sources, self.read.recursive)
        rows = [r for lo, hi in ranges for r in range(lo, hi) if self._servable(snapshot, r)]
        self.snapshot, self.rows = snapshot, np.asarray(rows, dtype=np.int64)

    def _servable(self, snapshot: snapshots.Snapshot, row: int) -> bool:
        """The row's file is still the one whose vector was stored, and (symbolic links resolved) inside a root."""
        if not snapshot.current(row):
            return False
        real = os.path.realpath(snapshot.paths[row])
        return any(real == root or real.startswith(root.rstrip("/") + "/") for root in self.roots)

    def live_rows(self) -> np.ndarray:
        """The served rows whose files are still what was stored, checked now (a file changed or deleted since the
        last pass is left out until the next pass stores it again)."""
        snapshot = self._snapshot()
        return np.asarray([r for r in self.rows.tolist() if self._servable(snapshot, r)], dtype=np.int64)

    # -- what the page asks ---------------------------------------------------------------------------------
    def status(self) -> dict:
        p = self.progress
        return {
            "model": self.model.spec,
            "images": len(self.rows),
            "scanning": p.scanning,
            "done": p.done,
            "total": p.total,
            "skipped": p.skipped,
            "passes": p.passes,
            "last_pass": p.last_pass,
            "error": p.error,
            "counts": p.counts,
            "roots": self.roots,
        }

    def query(self, text: str | None = None, *, like: str | None = None, image_file: str | None = None) -> np.ndarray:
        """The unit query vector of a search box text ("dog +beach -people": `+`/`-` terms add and subtract, as
        --add/--subtract), an indexed image (`like`: more like this) or an image file (an upload)."""

        if like is not None:
            return self.vector_of(like)
        if image_file is not None:  # an upload: decoded by a worker process, so --file-timeout holds
            read = ReadOptions(
                workers=1, max_pixels=self.read.max_pixels, file_timeout=self.read.file_timeout, exact=self.read.exact
            )
            try:
                return image_vector(self.model, image_file, read)
            except UsageError as e:  # said for --image FILE; here it is the upload
                reason = str(e).split(": ", 1)[-1]
                raise UsageError(f"the uploaded image: {reason}") from None
        main, add, subtract = parse_query(text or "")
        if main is None and not add:
            raise UsageError("the query has no text to search for (a '-' term alone subtracts from nothing)")
        return query_vector(
            self.model, main if main is not None else add.pop(0), add=add, subtract=subtract, cache=self.cache
        )

    def vector_of(self, path: str) -> np.ndarray:
        snapshot = self._snapshot()
        i = self.row_of(path)
        if i is None:
            raise LookupError(f"{path}: not an indexed image under the served folders")
        return np.asarray(snapshot.vectors[i], dtype=np.float32)

    def row_of(self, path: str) -> int | None:
        """The snapshot row of a served image, else None."""
        import bisect

        snapshot, rows = self._snapshot(), self.rows
        i = bisect.bisect_left(snapshot.paths, path)
        if i >= len(snapshot) or snapshot.paths[i] != path:
            return None
        j = int(np.searchsorted(rows, i))
        return i if j < len(rows) and rows[j] == i and self._servable(snapshot, i) else None

    def search(self, q: np.ndarray, top: int, offset: int = 0, where: PhotoFilter | None = None) -> list[dict]:
        """Hits offset..offset+top, best first: path and cosine score; files changed or gone since are left out;
        `where`: only photos taken when, where and with what it says (zsclip.photos.filters)."""
        snapshot = self._snapshot()
        served = self.rows
        if where is not None and where.active:
            served = allowed_rows(snapshot.paths, served, where, self.cache)
        if not len(served):
            return []
        want, hits = offset + top, []
        while True:
            rows, scores = _top(snapshot, served, q, min(len(served), want + 8))
            hits = [(r, s) for r, s in zip(rows.tolist(), scores.tolist(), strict=True) if self._servable(snapshot, r)]
            if len(hits) >= offset + top or len(rows) >= len(served):
                break
            want *= 4
        return [{"path": snapshot.paths[r], "score": round(float(s), 6)} for r, s in hits[offset : offset + top]]

    def classify(self, classifier: Classifier) -> tuple[list[str], np.ndarray]:
        """(paths, probabilities [images, classes]) of every served image, with the int8 label check applied."""

        snapshot, rows = self._snapshot(), self.live_rows()
        paths = [snapshot.paths[r] for r in rows.tolist()]
        features = np.asarray(snapshot.vectors[rows], dtype=np.float32)
        features = Recheck(self.model, classifier, self.read.but(cache=self.cache))(paths, features)
        return paths, probabilities(features, classifier)

    def classifier(self, classes: list[str], templates: str) -> Classifier:

        named = [t.name for t in list_template_sets()]
        if templates not in ("default", *named):  # never a file path: the server reads no file it does not serve
            raise UsageError(f"templates={templates}: use a template set name ({', '.join(named)})")
        return build_classifier(self.model, classes, templates, cache=self.cache)

    def _snapshot(self) -> snapshots.Snapshot:
        if self.snapshot is None:
            if self.progress.scanning or not self.progress.passes:
                raise LookupError("no images indexed yet: the first pass is still running (see /api/status)")
            raise LookupError("no images indexed under the served folders")
        return self.snapshot


def _top(snapshot: snapshots.Snapshot, rows: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of the served rows (runs of consecutive rows scored as ranges)."""
    return snapshots.top_k(snapshot.vectors, q, k, as_ranges(rows))


def parse_query(text: str) -> tuple[str | None, list[str], list[str]]:
    """'a dog on a beach +sunset -people' -> ('a dog on a beach', ['sunset'], ['people'])."""
    main: list[str] = []
    terms: list[tuple[str, list[str]]] = []
    for word in text.split():
        if word[0] in "+-" and len(word) > 1:
            terms.append((word[0], [word[1:]]))
        elif terms:
            terms[-1][1].append(word)
        else:
            main.append(word)
    add = [" ".join(t) for sign, t in terms if sign == "+"]
    subtract = [" ".join(t) for sign, t in terms if sign == "-"]
    return (" ".join(main) or None), add, subtract
