"""Retrieval: put images into the image-embedding store (`index`) and find them by text or image (`search`).

No second image pipeline: indexing is embed_stream with the store on, exactly what classify runs, so a folder
classified once is already indexed, and the same bad-file rules apply. Search scores a query vector against a
snapshot of the store (zsclip.store.snapshots): exact, chunked, top-k by partial sort.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from zsclip.classify.predict import probabilities
from zsclip.core.errors import UsageError
from zsclip.engines import ReadOptions, Runtime, embed_stream, reading
from zsclip.models import ClipModel
from zsclip.photos.filters import PhotoFilter, allowed_rows, as_ranges
from zsclip.pipeline.encode import store_variant
from zsclip.pipeline.sources import expand_sources
from zsclip.store import snapshots
from zsclip.store.cache import Cache
from zsclip.zeroshot.classifier import text_embeddings


@dataclass(frozen=True)
class Hit:
    rank: int  # 1 = best
    path: str  # absolute, as stored
    score: float  # cosine similarity with the query

    def to_dict(self) -> dict:
        return {"rank": self.rank, "path": self.path, "score": round(self.score, 6)}


@dataclass
class IndexResult:
    new: int = 0  # encoded, never stored before at this path
    reused: int = 0  # vector taken from the store (unchanged, or moved/renamed and found by content hash)
    changed: int = 0  # stored before at this path, but the content changed: encoded again
    moved: int = 0  # of `reused`: found by content hash under another path that no longer exists
    copied: int = 0  # of `reused`: found by content hash under another path that still exists (a copy)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason), as classify reports them
    missing: list[str] = field(default_factory=list)  # stored under the paths, but the file is gone
    pruned: int = 0  # rows of missing files removed (prune=True)

    @property
    def indexed(self) -> int:
        return self.new + self.reused + self.changed

    def to_dict(self) -> dict:
        return {
            "indexed": self.indexed,
            "new": self.new,
            "reused": self.reused,
            "changed": self.changed,
            "moved": self.moved,
            "copied": self.copied,
            "skipped": len(self.skipped),
            "missing": len(self.missing),
            "pruned": self.pruned,
        }


def _roots(sources: list[tuple[str, bool]]) -> list[tuple[str, bool]]:
    return [(os.path.abspath(p), explicit) for p, explicit in sources]


def _sources(paths) -> list[tuple[str, bool]]:
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    paths = list(paths)
    if paths and all(isinstance(p, tuple) for p in paths):  # checked already by zsclip.pipeline.sources.expand_sources
        return paths
    return expand_sources(paths)


def index(
    model: ClipModel,
    paths: Iterable[str | os.PathLike] | str | os.PathLike,
    read: ReadOptions | None = None,
    runtime: Runtime | None = None,
    *,
    prune: bool = False,
    exact: bool = False,
    cache: Cache | None = None,
    on_batch: Callable[[int, int], None] | None = None,
    **read_fields,
) -> IndexResult:
    """Embed every image under `paths` into the image-embedding store; only new or changed files are encoded.

    Args:
        model: a loaded model (zsclip.load_model).
        paths: image files, folders or `@list.txt` files.
        read: how files are read (zsclip.engines.ReadOptions: batch_size, workers, recursive, max_pixels,
            file_timeout, shard); its fields may also be given by name (`workers=2`).
        runtime: who runs the stages (zsclip.engines.Runtime: the local engine, or Ray).
        prune: delete the rows of stored files that no longer exist.
        exact: decode without JPEG draft mode (vectors kept apart from the default's).
        cache: the cache holding the store (default: zsclip.cache_dir()).
        on_batch: called with (indexed, skipped) after every batch.

    Returns:
        An IndexResult: how many files were encoded, reused and skipped, and the stored files that no longer
        exist (`missing`; search leaves them out).

    Examples:
        >>> model = zsclip.load_model("shapes")
        >>> zsclip.index(model, "photos/").to_dict()
    """
    read, runtime = reading(read, runtime, read_fields, "index")
    if not read.store:
        raise UsageError("index keeps every vector in the image-embedding store: store=False does not apply")
    cache = cache or read.cache or Cache()
    exact = exact or read.exact
    read = read.but(cache=cache, exact=exact)
    sources = _sources(paths)
    roots = _roots(sources)
    variant = store_variant(model, exact)
    conn = cache.conn
    snapshots.ensure_generation(conn)
    before = set(snapshots.stored_paths(conn, model.fingerprint, variant, [r for r in roots if _utf8(r[0])]))
    seen: set[str] = set()
    result = IndexResult()
    for batch in embed_stream(model, sources, read, runtime):
        result.skipped += batch.skipped
        encoded = set(batch.encoded)
        for i, path in enumerate(batch.paths):
            key = os.path.abspath(path)
            seen.add(key)
            if not _utf8(key):  # SQLite keeps UTF-8 text: such a name cannot be stored, so search cannot find it
                result.skipped.append((path, "the file name is not valid UTF-8: it cannot be indexed for search"))
                continue
            if i in encoded:
                if key in before:
                    result.changed += 1
                else:
                    result.new += 1
            else:
                result.reused += 1
                if key not in before:  # found by its content under another path: moved there, or copied
                    digest = batch.content_hashes[i] if batch.content_hashes else None
                    if _copy_of(conn, model.fingerprint, variant, key, digest):
                        result.copied += 1
                    else:
                        result.moved += 1
        seen.update(os.path.abspath(p) for p, _ in batch.skipped)
        if on_batch:
            on_batch(len(batch.paths), len(batch.skipped))
    result.missing = sorted(p for p in before - seen if not os.path.exists(p))
    if prune:
        result.pruned = snapshots.delete_paths(conn, model.fingerprint, variant, result.missing)
    return result


def _copy_of(conn, fingerprint: str, variant: str, path: str, digest: str | None) -> bool:
    """Whether another stored file with this content still exists (then `path` is a copy of it, not a move)."""
    if not digest:
        return False
    rows = conn.execute(
        "SELECT path FROM image_embeddings INDEXED BY image_by_hash WHERE content_hash = ? AND fingerprint = ? "
        "AND variant = ? AND path != ?",
        (digest, fingerprint, variant, path),
    ).fetchall()
    return any(os.path.exists(r[0]) for r in rows)


def _utf8(path: str) -> bool:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# -- queries -----------------------------------------------------------------------------------------------
def text_vectors(
    model: ClipModel, texts: Sequence[str], templates: str | Sequence[str] | None = None, cache: Cache | None = None
) -> np.ndarray:
    """Unit-norm text embeddings [len(texts), dim], cached: each text as given, or ensembled over a template set
    exactly as class names are."""

    return text_embeddings(model, list(texts), templates or ("{}",), cache=cache)[0]


def image_vector(model: ClipModel, image: str | os.PathLike, read: ReadOptions | None = None) -> np.ndarray:
    """The unit-norm embedding of one image file, or a UsageError saying why it cannot be read; `read` as for
    embed_stream, never kept in the store (decoded here by default; `workers=1` for --file-timeout off the main
    thread)."""
    read = (read or ReadOptions(workers=0)).but(store=False)

    image = str(image)
    if not os.path.isfile(image):
        raise UsageError(f"--image {image}: no such file")
    for batch in embed_stream(model, [(image, True)], read):
        if batch.skipped:
            raise UsageError(f"--image {image}: cannot read the query image ({batch.skipped[0][1]})")
        if batch.features is not None:
            return batch.features[0]
    raise UsageError(f"--image {image}: cannot read the query image")


def query_vector(
    model: ClipModel,
    query: str | None = None,
    *,
    image: str | os.PathLike | None = None,
    add: Sequence[str] = (),
    subtract: Sequence[str] = (),
    templates: str | Sequence[str] | None = None,
    cache: Cache | None = None,
    exact: bool = False,
) -> np.ndarray:
    """rclip-style query arithmetic: the sum of the unit vectors of the query text, the query image and every
    `add` text, minus those of every `subtract` text, normalised."""
    texts = [t for t in [query] if t is not None] + list(add) + list(subtract)
    if query is None and image is None:
        raise UsageError("give a text query or --image FILE")
    if any(not t.strip() for t in texts):
        raise UsageError("a query text (QUERY, --add or --subtract) is empty")
    parts = []
    if texts:
        tv = text_vectors(model, texts, templates, cache)
        signs = np.array([1.0] * (len(texts) - len(subtract)) + [-1.0] * len(subtract), dtype=np.float32)
        parts.append((signs[:, None] * tv).sum(axis=0))
    if image is not None:
        parts.append(image_vector(model, image, ReadOptions(workers=0, exact=exact)))
    total = np.sum(parts, axis=0).astype(np.float32)
    norm = float(np.linalg.norm(total))
    if norm < 1e-6:
        raise UsageError("the query vectors cancel out (--subtract removes everything the query adds)")
    return total / norm


def check_search_options(top: int, threshold: float | None) -> None:
    if top < 1:
        raise UsageError(f"--top {top}: must be at least 1")
    if threshold is not None and not -1.0 <= threshold <= 1.0:
        raise UsageError(f"--threshold {threshold}: must be a cosine similarity between -1 and 1")


def search(
    model: ClipModel,
    query: str | np.ndarray | None,
    paths: Iterable[str | os.PathLike] | str | os.PathLike | None = None,
    top: int = 10,
    *,
    image: str | os.PathLike | None = None,
    add: Sequence[str] = (),
    subtract: Sequence[str] = (),
    templates: str | Sequence[str] | None = None,
    threshold: float | None = None,
    index_first: bool = True,
    approximate: bool = False,
    exact: bool = False,
    cache: Cache | None = None,
    budget: int = snapshots.DEFAULT_BUDGET,
    on_batch: Callable[[int, int], None] | None = None,
    read: ReadOptions | None = None,
    runtime: Runtime | None = None,
    where: PhotoFilter | None = None,
    **read_fields,
) -> list[Hit]:
    """The `top` stored images most similar to the query, best first (score = cosine similarity).

    The query is a text (combined with `image`, `add`, `subtract`, `templates` by query_vector), or a unit query
    vector made beforehand (e.g. by query_vector, so a bad query image fails before any indexing).

    `paths` limits the search to images under them (None: every image stored for this model); images there that
    are not indexed yet are indexed first (`read`, `runtime` and `on_batch` as for `index`), unless `index_first` is
    False. Files that no longer exist, or whose content changed since their vector was stored (a file that no
    longer decodes keeps its old row), are left out. `threshold` drops hits scoring below it. `approximate` uses a
    faiss IVF index (the `zsclip[faiss]` extra; recall@10 measured in bench/search.py) instead of exact search.

    Args:
        model: a loaded model (zsclip.load_model).
        query: a text ("a dog on a beach"; `+word`/`-word` terms via add/subtract), a unit vector, or None with
            `image`.
        paths: limit to images under these (indexed first where new); None: everything stored for this model.
        top: how many hits; threshold: drop hits scoring below it.
        image: a query image file (combined with the text when both are given).
        read, runtime: how new files are read and who runs it (as for zsclip.index); ReadOptions fields may be
            given by name.
        where: only photos taken in a time span, with a camera, with or without GPS
            (zsclip.photos.filters.PhotoFilter, read from EXIF once into the cache).

    Returns:
        A list of Hit(rank, path, score), best first.

    Examples:
        >>> model = zsclip.load_model("shapes")
        >>> [hit.to_dict() for hit in zsclip.search(model, "a red circle", "photos/", top=5)]
    """
    check_search_options(top, threshold)
    read, runtime = reading(read, runtime, read_fields, "search")
    cache = cache or read.cache or Cache()
    exact = exact or read.exact  # the vectors searched are those index_first stores
    sources = _sources(paths) if paths is not None else None
    if isinstance(query, np.ndarray):
        q = query.astype(np.float32)
    else:
        q = query_vector(
            model, query, image=image, add=add, subtract=subtract, templates=templates, cache=cache, exact=exact
        )
    if sources is not None and index_first:
        index(model, sources, read, runtime, exact=exact, cache=cache, on_batch=on_batch)

    snapshot = snapshots.load(cache, model.fingerprint, store_variant(model, exact))
    ranges = snapshot.ranges(_roots(sources) if sources is not None else None, read.recursive)
    if not ranges:
        where = f" under {', '.join(p for p, _ in sources)}" if sources is not None else ""
        how = f"zsclip index {' '.join(p for p, _ in sources)}" if sources is not None else "zsclip index PATH"
        raise UsageError(f"no images indexed for model {model.spec}{where}; index them: {how} --model {model.spec}")
    if snapshot.vectors.shape[1] != len(q):
        raise UsageError(f"the stored vectors have {snapshot.vectors.shape[1]} dimensions, the query {len(q)}")
    if where is not None and where.active:  # when, where, which camera: the rows that pass, before ranking
        rows = np.concatenate([np.arange(lo, hi) for lo, hi in ranges])
        ranges = as_ranges(allowed_rows(snapshot.paths, rows, where, cache))
        if not ranges:
            return []
    want = top
    total = sum(hi - lo for lo, hi in ranges)
    while True:  # a few more candidates than asked, for stored files that have since been deleted
        if approximate:
            rows, scores = snapshots.approximate_top_k(snapshot, q, min(total, want + 8), ranges)
        else:
            rows, scores = snapshots.top_k(snapshot.vectors, q, min(total, want + 8), ranges, budget)
        hits = []
        for row, score in zip(rows.tolist(), scores.tolist(), strict=True):
            if threshold is not None and score < threshold:
                break
            if snapshot.current(row):  # a file gone, or changed since its vector was stored, is never served
                hits.append(Hit(len(hits) + 1, snapshot.paths[row], float(score)))
            if len(hits) == top:
                break
        done = len(rows) >= total or (approximate and len(rows) < min(total, want + 8))  # no more to find
        if len(hits) == top or done or not len(rows) or (threshold is not None and scores[-1] < threshold):
            return hits
        want *= 4


def class_search(
    model: ClipModel,
    classifier,
    label: str,
    paths: Iterable[str | os.PathLike] | str | os.PathLike | None = None,
    top: int = 10,
    *,
    threshold: float | None = None,
    exact: bool = False,
    cache: Cache | None = None,
    chunk: int = 20_000,
) -> list[Hit]:
    """The `top` stored images (under `paths`, already indexed) most likely to be of class `label` of a classifier
    (a few-shot one from zsclip fit, or any Classifier), best first; the score is that class's probability."""

    check_search_options(top, None)
    if label not in classifier.labels:
        shown = ", ".join(classifier.labels[:8]) + (", ..." if len(classifier) > 8 else "")
        raise UsageError(f"{label!r} is not a class of the classifier: use one of {shown}")
    c = classifier.labels.index(label)
    cache = cache or Cache()
    sources = _sources(paths) if paths is not None else None
    snapshot = snapshots.load(cache, model.fingerprint, store_variant(model, exact))
    ranges = snapshot.ranges(_roots(sources) if sources is not None else None)
    rows, scores = np.empty(0, np.int64), np.empty(0, np.float32)
    for lo, hi in ranges:
        for start in range(lo, hi, chunk):
            end = min(hi, start + chunk)
            p = probabilities(np.asarray(snapshot.vectors[start:end]), classifier)[:, c]
            rows, scores = np.concatenate([rows, np.arange(start, end)]), np.concatenate([scores, p])
            keep = np.argsort(-scores, kind="stable")[: 4 * top + 8]
            rows, scores = rows[keep], scores[keep]
    hits = []
    for row, score in zip(rows.tolist(), scores.tolist(), strict=True):
        if threshold is not None and score < threshold:
            break
        if snapshot.current(row):
            hits.append(Hit(len(hits) + 1, snapshot.paths[row], float(score)))
        if len(hits) == top:
            break
    return hits
