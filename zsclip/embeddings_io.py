"""Image embeddings as Parquet shards: how a cluster without a shared disk hands back 100M vectors, and how
`zsclip search --embeddings DIR` reads them.

A directory of `part-NNNNN.parquet` files, each with the columns path (string), content_hash (string),
fingerprint (the model's, string) and vector (fixed-size list of float32, unit norm). Shards are written whole
(temp file, fsync, rename), so a killed export leaves only complete shards; search reads one row group at a time,
so memory stays at one chunk however many vectors there are.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from .errors import UsageError, ZsclipError

SHARD_ROWS = 100_000  # ~200 MB of 512-d float32 per shard: few files for 100M vectors, each quick to rewrite


@dataclass(frozen=True)
class EmbeddingRow:
    path: str
    content_hash: str
    fingerprint: str
    vector: object  # 1-d float32 array-like, unit norm


@dataclass(frozen=True)
class Hit:
    path: str
    score: float  # cosine similarity to the query
    content_hash: str


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise UsageError('Parquet embeddings need pyarrow: pip install "zsclip[ray]" (or pyarrow)') from None
    return pa, pq


def write_embeddings(
    directory: str | os.PathLike, rows: Iterable[EmbeddingRow], shard_rows: int = SHARD_ROWS, prefix: str = "part"
) -> int:
    """Write `rows` as Parquet shards under `directory` (created); files of an earlier export with the same
    `prefix` are replaced, so a rerun never mixes two exports, while the N jobs of a `--shard i/N` run (each its
    own prefix) write beside each other. Returns the number of rows written."""
    import numpy as np

    pa, pq = _pyarrow()
    os.makedirs(directory, exist_ok=True)
    for name in os.listdir(directory):
        if re.fullmatch(rf"{re.escape(prefix)}-\d+\.parquet", name):
            os.unlink(os.path.join(directory, name))
    count, part, buffer = 0, 0, []

    def flush() -> None:
        nonlocal part
        vectors = np.stack([np.asarray(r.vector, dtype=np.float32) for r in buffer])
        table = pa.table(
            {
                "path": pa.array([r.path for r in buffer], pa.string()),
                "content_hash": pa.array([r.content_hash for r in buffer], pa.string()),
                "fingerprint": pa.array([r.fingerprint for r in buffer], pa.string()),
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), vectors.shape[1]),
            }
        )
        final = os.path.join(directory, f"{prefix}-{part:05d}.parquet")
        temp = final + ".tmp"
        pq.write_table(table, temp, row_group_size=8192)
        with open(temp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(temp, final)
        part += 1
        buffer.clear()

    for row in rows:
        buffer.append(row)
        count += 1
        if len(buffer) >= shard_rows:
            flush()
    if buffer:
        flush()
    return count


def rows_from_stream(batches: Iterable, fingerprint: str) -> Iterator[EmbeddingRow]:
    """EmbeddingRows from zsclip.encode.embed_stream batches (either engine); where an engine did not read the
    content hashes, they are taken here."""
    from .identity import content_hash, digest
    from .shards import is_member, read_member

    def hashed(path: str) -> str:
        member = is_member(path)
        return digest(read_member(*member)) if member is not None else content_hash(path)

    for batch in batches:
        if batch.features is None:
            continue
        vectors = batch.features.float().cpu().numpy()
        known = batch.content_hashes or [None] * len(batch.paths)
        hashes = [h or hashed(p) for h, p in zip(known, batch.paths, strict=True)]
        for path, hash_, vector in zip(batch.paths, hashes, vectors, strict=True):
            # absolute, as the store keeps them: a search from another folder can open them (URIs stay as they are)
            yield EmbeddingRow(path if "://" in path else os.path.abspath(path), hash_, fingerprint, vector)


def export_embeddings(model, sources: list[tuple[str, bool]], directory: str | os.PathLike, **options) -> int:
    """`zsclip index --embeddings-out DIR`: embed `sources` (options go to zsclip.encode.embed_stream, among
    them engine="ray") and write the vectors as Parquet shards; returns the number of vectors."""
    from .encode import embed_stream

    shard = options.get("shard")
    prefix = f"part-shard{shard[0]}of{shard[1]}" if shard else "part"
    rows = rows_from_stream(embed_stream(model, sources, **options), model.fingerprint)
    return write_embeddings(directory, rows, prefix=prefix)


def _parts(directory: str | os.PathLike) -> list[str]:
    try:
        names = sorted(n for n in os.listdir(directory) if n.startswith("part-") and n.endswith(".parquet"))
    except OSError as exc:
        raise UsageError(f"--embeddings {directory}: {exc.strerror or exc}") from None
    if not names:
        raise UsageError(f"--embeddings {directory}: no part-*.parquet files (write them with --embeddings-out)")
    return [os.path.join(directory, n) for n in names]


def search_embeddings(
    directory: str | os.PathLike, query_vec, top: int = 10, fingerprint: str | None = None
) -> list[Hit]:
    """The `top` vectors most similar (cosine) to `query_vec`, best first, read one row group at a time. With
    `fingerprint`, vectors of another model are an error rather than meaningless scores."""
    import numpy as np

    _, pq = _pyarrow()
    if top < 1:
        raise UsageError(f"--top {top}: give at least 1")
    query = np.asarray(query_vec, dtype=np.float32).ravel()
    query = query / max(float(np.linalg.norm(query)), 1e-12)
    best_scores = np.empty(0, dtype=np.float32)
    best_rows: list[tuple[str, str]] = []
    for part in _parts(directory):
        parquet = pq.ParquetFile(part)
        for g in range(parquet.num_row_groups):
            table = parquet.read_row_group(g)
            if fingerprint is not None:
                found = set(table.column("fingerprint").to_pylist())
                if found - {fingerprint}:
                    raise ZsclipError(
                        f"{part}: vectors of model {sorted(found - {fingerprint})[0]}, not of the query's model "
                        f"{fingerprint}; search with the model they were made with"
                    )
            column = table.column("vector").combine_chunks()
            dim = column.type.list_size
            if dim != query.shape[0]:
                raise ZsclipError(f"{part}: {dim}-d vectors, the query is {query.shape[0]}-d (another model)")
            vectors = column.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)
            scores = vectors @ query
            keep = np.argsort(-scores, kind="stable")[:top]
            paths = table.column("path").to_pylist()
            hashes = table.column("content_hash").to_pylist()
            best_scores = np.concatenate([best_scores, scores[keep]])
            best_rows += [(paths[i], hashes[i]) for i in keep]
            order = np.argsort(-best_scores, kind="stable")[:top]
            best_scores = best_scores[order]
            best_rows = [best_rows[i] for i in order]
    return [Hit(p, float(s), h) for (p, h), s in zip(best_rows, best_scores, strict=True)]
