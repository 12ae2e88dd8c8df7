"""Query latency of `zsclip.search` over N stored 512-d vectors (synthetic, inserted into a store in a temporary
cache directory), exact, against brute force (one full matrix product and a full sort over the vectors held in
RAM), and with --faiss the approximate search (zsclip[faiss]): its latency and recall@10 against the exact results.

    python bench/search.py --sizes 100000,1000000

Targets (issue 14): query latency after the model is loaded <= 50 ms at 100k and <= 500 ms at 1M vectors.
The vectors are clustered (1,000 centres plus noise, unit norm) like real image embeddings. The paths are
synthetic, so the existence check search makes on its ~10 hits is answered True without a stat call.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zsclip.pipeline.encode import store_variant
from zsclip.retrieval import search as retrieval
from zsclip.store import snapshots
from zsclip.store.cache import Cache
from zsclip.store.embeddings import FileIdentity, ImageStore

DIM = 512


def synthetic(n: int, seed: int = 0, chunk: int = 50_000):
    """Clustered unit vectors, in chunks (never all at once)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(1000, DIM)).astype(np.float32)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        v = centres[rng.integers(0, 1000, m)] + rng.normal(scale=0.8, size=(m, DIM)).astype(np.float32)
        yield start, v / np.linalg.norm(v, axis=1, keepdims=True)


def identity(path: str) -> FileIdentity:
    """A FileIdentity for a synthetic file, whatever identity fields the store has."""
    values = {"path": path, "content_hash": path}
    return FileIdentity(**{f.name: values.get(f.name, 0) for f in dataclasses.fields(FileIdentity)})


def fake_model() -> SimpleNamespace:
    """What search needs of a model when the query is a vector already: its fingerprint and store variant (the
    same attributes zsclip.pipeline.encode.store_variant reads of a real ClipModel)."""
    return SimpleNamespace(
        spec="bench", fingerprint="bench-512", precision="fp32", backend="torch", preprocess="bench-preprocess",
        preprocess_key="bench-preprocess", image_size=224,
    )  # fmt: skip


class SyntheticFiles:
    """The stored paths (/bench/...) are not on disk. Search checks each hit's file identity against its row with
    one stat per candidate (snapshots.Snapshot.current); here that stat is of a real file, so its cost is counted."""

    def __enter__(self):
        self.real = snapshots.Snapshot.current
        snapshots.Snapshot.current = lambda snapshot, row: os.stat(__file__) is not None
        return self

    def __exit__(self, *exc):
        snapshots.Snapshot.current = self.real


def run(n: int, queries: int, k: int, budget: int, use_faiss: bool) -> dict:
    tmp = tempfile.mkdtemp(prefix="zsclip-bench-search-")
    cache = Cache(tmp)
    model = fake_model()
    store = ImageStore.open(cache, model.fingerprint, store_variant(model))
    snapshots.ensure_generation(cache.conn)
    snapshots._OPENED.clear()
    held = np.empty((n, DIM), dtype=np.float32)  # the brute-force reference's copy
    t0 = time.perf_counter()
    for start, block in synthetic(n):
        held[start : start + len(block)] = block
        store.put([(identity(f"/bench/{(start + i) // 1000:04d}/{start + i:07d}.jpg"), v) for i, v in enumerate(block)])
    insert_s = time.perf_counter() - t0
    rng = np.random.default_rng(1)
    qs = [held[rng.integers(n)] + rng.normal(scale=0.05, size=DIM).astype(np.float32) for _ in range(queries)]
    qs = [q / np.linalg.norm(q) for q in qs]

    with SyntheticFiles():
        t0 = time.perf_counter()
        retrieval.search(model, qs[0], None, top=k, cache=cache, budget=budget)  # builds the snapshot
        build_s = time.perf_counter() - t0
        ours, latencies, cold = [], [], []
        for q in qs:
            t0 = time.perf_counter()
            hits = retrieval.search(model, q, None, top=k, cache=cache, budget=budget)
            latencies.append(time.perf_counter() - t0)
            ours.append([int(h.path[-11:-4]) for h in hits])
        for q in qs[: max(3, len(qs) // 5)]:  # as a new process (a CLI call) would: the snapshot mapped afresh
            snapshots._OPENED.clear()
            t0 = time.perf_counter()
            retrieval.search(model, q, None, top=k, cache=cache, budget=budget)
            cold.append(time.perf_counter() - t0)

    brute, brute_s = [], []
    for q in qs:
        t0 = time.perf_counter()
        scores = held @ q
        brute.append(np.argsort(-scores, kind="stable")[:k].tolist())
        brute_s.append(time.perf_counter() - t0)
    agree = float(np.mean([a == b for a, b in zip(ours, brute, strict=True)]))
    out = {
        "n": n,
        "insert_s": insert_s,
        "snapshot_build_s": build_s,
        "median_ms": 1000 * statistics.median(latencies),
        "p95_ms": 1000 * sorted(latencies)[int(0.95 * (len(latencies) - 1))],
        "cold_median_ms": 1000 * statistics.median(cold),
        "brute_median_ms": 1000 * statistics.median(brute_s),
        "exact_agreement": agree,
    }
    report_exact(out)
    if use_faiss:
        approximate(model, cache, qs, brute, k)
    del held
    import shutil

    cache.close()
    store.close()
    shutil.rmtree(tmp, ignore_errors=True)
    return out


def approximate(model, cache: Cache, qs: list[np.ndarray], exact: list[list[int]], k: int) -> None:
    """zsclip.search(..., approximate=True): index build time, latency and recall@k against the exact top k."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        print("|   faiss not installed: pip install 'zsclip[faiss]' |")
        return
    with SyntheticFiles():
        t0 = time.perf_counter()
        retrieval.search(model, qs[0], None, top=k, cache=cache, approximate=True)
        build = time.perf_counter() - t0
        lat, recall = [], []
        for q, truth in zip(qs, exact, strict=True):
            t0 = time.perf_counter()
            hits = retrieval.search(model, q, None, top=k, cache=cache, approximate=True)
            lat.append(time.perf_counter() - t0)
            recall.append(len({int(h.path[-11:-4]) for h in hits} & set(truth)) / k)
    median = 1000 * statistics.median(lat)
    print(f"|   zsclip search --approximate (faiss IVF): index build {build:.1f} s, median {median:.2f} ms, "
          f"recall@{k} {np.mean(recall):.3f} vs exact |", flush=True)  # fmt: skip


TARGETS = {100_000: 50.0, 1_000_000: 500.0}


def report_exact(r: dict) -> None:
    target = TARGETS.get(r["n"])
    met = "" if target is None else ("yes" if r["median_ms"] <= target else "no")
    print(
        f"| {r['n']:,} | {r['insert_s']:.1f} | {r['snapshot_build_s']:.1f} | {r['median_ms']:.1f} | {r['p95_ms']:.1f} "
        f"| {r['cold_median_ms']:.1f} | {r['brute_median_ms']:.1f} | {r['brute_median_ms'] / r['median_ms']:.2f}x "
        f"| {r['exact_agreement']:.0%} | {target or ''} | {met} |",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--budget-mb", type=int, default=snapshots.DEFAULT_BUDGET >> 20)
    parser.add_argument("--faiss", action="store_true", help="Also measure --approximate (pip install faiss-cpu).")
    args = parser.parse_args()
    print("| stored vectors | insert s | snapshot build s | zsclip median ms | p95 ms | first query in a process ms | "
          "brute force ms | ratio | same top-10 | target ms | met? |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for n in map(int, args.sizes.split(",")):
        run(n, args.queries, args.k, args.budget_mb << 20, args.faiss)


if __name__ == "__main__":
    main()
