"""Image embeddings as Parquet shards: how a cluster without a shared disk hands back 100M vectors, and how
`zsclip search --embeddings DIR` reads them.

An export is a folder: `manifest.json` (a zsclip.store.identity state file) names the model the vectors were made with,
how the export was sharded (`--shard i/N`: N jobs, each with its own parts) and, per job, its Parquet parts with
their row counts and byte sizes. Each part has the columns path (string), content_hash (string), fingerprint (the
model's, string) and vector (fixed-size list of float32, unit norm).

Only what the manifest lists is an export. A job writes its parts into a hidden folder beside them and, when it
has written them all, moves them in and rewrites the manifest under a lock: a killed export leaves the previous
one whole, a rerun replaces its job's parts (and an export of another model or another sharding replaces the
whole export), so two exports never mix, and the N jobs of a sharded run commit beside each other. Search reads
the listed parts only, checks their sizes first, and reads one row group at a time, so memory stays at one chunk
however many vectors there are.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from zsclip.core.errors import UsageError, ZsclipError
from zsclip.core.locks import Lock
from zsclip.core.paths import check_output_dir
from zsclip.core.progress import log
from zsclip.core.wording import plural
from zsclip.engines import ReadOptions, Runtime, embed_stream
from zsclip.store.identity import StateError, content_hash, digest, read_state, write_state
from zsclip.store.shards import is_member, read_member

SHARD_ROWS = 100_000  # ~200 MB of 512-d float32 per part: few files for 100M vectors, each quick to rewrite
MANIFEST = "manifest.json"
KIND = "embeddings export"
LOCK = ".zsclip-export.lock"
_TMP = ".zsclip-export-"
_STALE_TMP = 24 * 3600  # a hidden folder of a killed job is removed once it is this old
EXPORT_HELP = "export them again with zsclip index --embeddings-out"


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


# -- writing -----------------------------------------------------------------------------------------------
def check_export_dir(directory: str | os.PathLike) -> Path:
    """--embeddings-out DIR before any work: a folder that is new, empty, or an export (nothing else in it)."""

    out = check_output_dir(directory, "--embeddings-out")
    ours = re.compile(rf"^(part-.*\.parquet|{re.escape(MANIFEST)}|{re.escape(LOCK)}|{re.escape(_TMP)}.*)$")
    others = sorted(n for n in (os.listdir(out) if out.is_dir() else []) if not ours.match(n))
    if others:
        raise UsageError(f"--embeddings-out {out}: the folder holds other files ({others[0]}); use a new folder")
    return out


def write_embeddings(
    directory: str | os.PathLike,
    rows: Iterable[EmbeddingRow],
    shard_rows: int = SHARD_ROWS,
    *,
    shard: tuple[int, int] | None = None,
    spec: str | None = None,
    sources: list[str] | None = None,
) -> int:
    """Write `rows` as this job's part of the export in `directory` (created) and commit it: shard i of N (None:
    the whole export). Returns the number of rows written."""
    import numpy as np

    pa, pq = _pyarrow()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    job = uuid.uuid4().hex[:12]
    staging = directory / f"{_TMP}{job}"
    staging.mkdir()
    parts: list[dict] = []
    fingerprints: set[str] = set()
    count, buffer = 0, []

    def flush() -> None:
        vectors = np.stack([np.asarray(r.vector, dtype=np.float32) for r in buffer])
        table = pa.table(
            {
                "path": pa.array([r.path for r in buffer], pa.string()),
                "content_hash": pa.array([r.content_hash for r in buffer], pa.string()),
                "fingerprint": pa.array([r.fingerprint for r in buffer], pa.string()),
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), vectors.shape[1]),
            }
        )
        name = f"part-{job}-{len(parts):05d}.parquet"
        pq.write_table(table, staging / name, row_group_size=8192)
        with open(staging / name, "rb") as f:
            os.fsync(f.fileno())
        parts.append(
            {"name": name, "rows": len(buffer), "bytes": (staging / name).stat().st_size, "dim": int(vectors.shape[1])}
        )
        buffer.clear()

    try:
        for row in rows:
            buffer.append(row)
            fingerprints.add(row.fingerprint)
            count += 1
            if len(buffer) >= shard_rows:
                flush()
        if buffer:
            flush()
        _commit(directory, staging, parts, shard or (0, 1), fingerprints, spec, sources)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return count


def _commit(
    directory: Path,
    staging: Path,
    parts: list[dict],
    shard: tuple[int, int],
    fingerprints: set[str],
    spec: str | None,
    sources: list[str] | None,
) -> None:
    """Move the job's parts in and rewrite the manifest, under the export's lock."""

    if len(fingerprints) > 1:
        raise ZsclipError(f"{directory}: one export holds the vectors of one model, not {len(fingerprints)}")
    index, total = shard
    with Lock(directory / LOCK, f"--embeddings-out {directory}").acquire_waiting(timeout=600):
        try:
            body = read_state(directory / MANIFEST, KIND)
        except StateError:
            body = {}
        jobs = body.get("jobs") if isinstance(body.get("jobs"), dict) else {}
        fingerprint = next(iter(fingerprints), body.get("fingerprint"))
        replaced = body and (body.get("fingerprint") not in (None, fingerprint) or body.get("shards") != total)
        if replaced:
            log(f"note: {directory}: the export there (of another model or sharding) is replaced")
            jobs = {}
        for part in parts:
            os.replace(staging / part["name"], directory / part["name"])
        jobs[str(index)] = {
            "parts": parts,
            "rows": sum(p["rows"] for p in parts),
            "sources": sources,
            "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        made = {"fingerprint": fingerprint, "shards": total}
        new_body = {"fingerprint": fingerprint, "spec": spec or body.get("spec"), "shards": total, "jobs": jobs}
        write_state(directory / MANIFEST, KIND, made, new_body)
        listed = {p["name"] for job in jobs.values() for p in job["parts"]}
        for name in os.listdir(directory):  # parts of replaced exports, and of the format before manifests
            if name.startswith("part-") and name.endswith(".parquet") and name not in listed:
                with contextlib.suppress(OSError):
                    os.unlink(directory / name)
            elif name.startswith(_TMP) and directory / name != staging and _age(directory / name) > _STALE_TMP:
                shutil.rmtree(directory / name, ignore_errors=True)


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0


def rows_from_stream(batches: Iterable, fingerprint: str) -> Iterator[EmbeddingRow]:
    """EmbeddingRows from zsclip.engines.embed_stream batches (either engine); where an engine did not read the
    content hashes, they are taken here."""

    def hashed(path: str) -> str:
        member = is_member(path)
        return digest(read_member(*member)) if member is not None else content_hash(path)

    for batch in batches:
        if batch.features is None:
            continue
        vectors = batch.features
        known = batch.content_hashes or [None] * len(batch.paths)
        hashes = [h or hashed(p) for h, p in zip(known, batch.paths, strict=True)]
        for path, hash_, vector in zip(batch.paths, hashes, vectors, strict=True):
            # absolute, as the store keeps them: a search from another folder can open them (URIs stay as they are)
            yield EmbeddingRow(path if "://" in path else os.path.abspath(path), hash_, fingerprint, vector)


def export_embeddings(
    model, sources: list[tuple[str, bool]], directory: str | os.PathLike, read: ReadOptions, runtime: Runtime | None
) -> int:
    """`zsclip index --embeddings-out DIR`: embed `sources` (read as `read` says, this job's shard of them, run by
    `runtime`) and write the vectors as this job's part of the export; returns the number of vectors."""
    rows = rows_from_stream(embed_stream(model, sources, read, runtime), model.fingerprint)
    named = [p if "://" in p else os.path.abspath(p) for p, _ in sources]
    return write_embeddings(directory, rows, shard=read.shard, spec=model.spec, sources=named)


# -- reading -----------------------------------------------------------------------------------------------
@dataclass
class Export:
    """What an export's manifest says, checked against the files."""

    directory: Path
    fingerprint: str | None
    spec: str | None
    shards: int
    jobs: dict[str, dict]

    @property
    def parts(self) -> list[Path]:
        return [self.directory / p["name"] for i in sorted(self.jobs, key=int) for p in self.jobs[i]["parts"]]

    @property
    def missing_jobs(self) -> list[int]:
        return [i for i in range(self.shards) if str(i) not in self.jobs]


def read_export(directory: str | os.PathLike) -> Export:
    """The export in `directory`; one-line errors for a folder that is not one, or whose files do not match it."""
    directory = Path(directory)
    if not directory.is_dir():
        raise UsageError(f"--embeddings {directory}: no such folder (write one with zsclip index --embeddings-out)")
    try:
        body = read_state(directory / MANIFEST, KIND)
    except StateError as exc:
        if any(n.endswith(".parquet") for n in os.listdir(directory)):
            raise UsageError(
                f"--embeddings {directory}: Parquet files without a valid {MANIFEST} (an export by an older zsclip, "
                f"cut short, or not zsclip's): {EXPORT_HELP}"
            ) from None
        raise UsageError(f"--embeddings {directory}: no export there ({exc}); {EXPORT_HELP}") from None
    export = Export(
        directory, body.get("fingerprint"), body.get("spec"), int(body.get("shards") or 1), body.get("jobs") or {}
    )
    for i, job in export.jobs.items():
        for part in job["parts"]:
            path = directory / part["name"]
            size = path.stat().st_size if path.is_file() else None
            if size != part["bytes"]:
                what = "is missing" if size is None else f"has {size:,} bytes, not the {part['bytes']:,} written"
                raise ZsclipError(f"--embeddings {directory}: {part['name']} (of job {i}) {what}: {EXPORT_HELP}")
    return export


def search_embeddings(
    directory: str | os.PathLike, query_vec, top: int = 10, fingerprint: str | None = None
) -> list[Hit]:
    """The `top` vectors most similar (cosine) to `query_vec`, best first, read one row group at a time. With
    `fingerprint`, vectors of another model are an error rather than meaningless scores."""
    import numpy as np

    _, pq = _pyarrow()
    if top < 1:
        raise UsageError(f"--top {top}: give at least 1")
    export = read_export(directory)
    if fingerprint is not None and export.fingerprint not in (None, fingerprint):
        raise ZsclipError(
            f"--embeddings {directory}: vectors of model {export.fingerprint}, not of the query's model "
            f"{fingerprint}; search with the model they were made with ({export.spec or 'see its manifest'})"
        )
    if export.missing_jobs:
        shown = ", ".join(f"{i}/{export.shards}" for i in export.missing_jobs[:5])
        log(f"warning: {directory} holds {len(export.jobs)} of {plural(export.shards, 'shard')} (missing {shown})")
    query = np.asarray(query_vec, dtype=np.float32).ravel()
    query = query / max(float(np.linalg.norm(query)), 1e-12)
    best_scores = np.empty(0, dtype=np.float32)
    best_rows: list[tuple[str, str]] = []
    for part in export.parts:
        for table in _row_groups(pq, part):
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


def _row_groups(pq, part: Path):
    """The part's row groups as tables; a part that pyarrow cannot read is one line naming it."""
    import pyarrow as pa

    try:
        parquet = pq.ParquetFile(part)
        for g in range(parquet.num_row_groups):
            yield parquet.read_row_group(g)
    except (OSError, ValueError, TypeError, pa.lib.ArrowException) as exc:  # pyarrow's errors for a bad file
        raise ZsclipError(f"{part} is damaged ({' '.join(str(exc).split())[:160]}): {EXPORT_HELP}") from None
