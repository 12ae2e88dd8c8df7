"""Search latency of `zsclip serve` over HTTP, after load, with N stored vectors (issue 24: p50 <= 60 ms, p95 <= 150
ms at 100k).

    python bench/serve.py [--images 100000] [--model shapes] [--queries 200]

The N files are real files on disk (a byte each, named .png, in folders of 1,000), so the server's stat checks
(every served row when the snapshot loads, every hit when it answers) are real; their vectors are put into the
image store beforehand under each file's real identity (clustered unit vectors of the model's width, as
bench/search.py makes them), so the server's first indexing pass finds every file stored and encodes none. Then
`zsclip serve` runs as its own process and this script times `GET /api/search?q=TEXT&top=24` one query at a time
from a client in this process: every query a text never asked before (so each includes encoding the text with the
model's text tower), and again with texts asked before (cached text vectors).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
WORDS = [
    "red",
    "blue",
    "green",
    "yellow",
    "orange",
    "purple",
    "circle",
    "square",
    "star",
    "cross",
    "hexagon",
    "triangle",
    "dog",
    "cat",
    "beach",
    "city",
]


def make_files(root: Path, n: int) -> list[str]:
    paths = []
    for i in range(n):
        folder = root / f"{i // 1000:04d}"
        if i % 1000 == 0:
            folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{i:07d}.png"
        path.write_bytes(b"x")
        paths.append(str(path))
    return paths


def store_vectors(paths: list[str], spec: str, cache_dir: Path) -> None:
    from zsclip.models import load_model
    from zsclip.pipeline.encode import store_variant
    from zsclip.store.cache import Cache
    from zsclip.store.embeddings import ImageStore
    from zsclip.store.identity import FileIdentity

    model = load_model(spec, device="cpu")
    model.backend = "torch"
    dim = len(_width(model))
    cache = Cache(cache_dir)
    store = ImageStore.open(cache, model.fingerprint, store_variant(model))
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(1000, dim)).astype(np.float32)
    for start in range(0, len(paths), 20_000):
        chunk = paths[start : start + 20_000]
        v = centres[rng.integers(0, 1000, len(chunk))] + rng.normal(scale=0.8, size=(len(chunk), dim)).astype("f4")
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        rows = []
        for path, vector in zip(chunk, v, strict=True):
            st = os.stat(path)
            identity = FileIdentity(path, st.st_size, st.st_mtime_ns, f"bench-{path}", st.st_ctime_ns, st.st_ino)
            rows.append((identity, vector))
        store.put(rows)


def _width(model) -> np.ndarray:
    from zsclip.retrieval.search import text_vectors

    return text_vectors(model, ["x"])[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--model", default="shapes")
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="zsclip-bench-serve-"))
    cache_dir = work / "cache"
    env = {**os.environ, "ZSCLIP_CACHE_DIR": str(cache_dir), "PYTHONPATH": str(REPO)}
    os.environ["ZSCLIP_CACHE_DIR"] = str(cache_dir)
    t0 = time.perf_counter()
    paths = make_files(work / "photos", args.images)
    store_vectors(paths, args.model, cache_dir)
    print(f"{args.images:,} files and stored vectors made in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    command = [sys.executable, "-m", "zsclip", "serve", str(work / "photos"), "-m", args.model, "--port", "0"]
    command += ["--rescan", "0", "--backend", args.backend]
    server = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        url = None
        while url is None:
            line = server.stderr.readline()
            if not line:
                raise SystemExit(f"zsclip serve exited {server.wait()}")
            found = re.search(r"at (http://\S+)", line)
            url = found.group(1) if found else None
        url, token = url.split("?token=")
        auth = {"Authorization": f"token {token}"}  # an API client's header (docs/serve.md)

        def get(address: str) -> bytes:
            return urllib.request.urlopen(urllib.request.Request(address, headers=auth)).read()

        t0 = time.perf_counter()
        while True:
            status = json.loads(get(url + "api/status"))
            if status["passes"] >= 1:
                break
            time.sleep(0.5)
        first = time.perf_counter() - t0
        print(f"first pass (all stored): {first:.1f} s; serving {status['images']:,} images", file=sys.stderr)
        rng = np.random.default_rng(0)
        texts = [" ".join(rng.choice(WORDS, 3)) + f" {i}" for i in range(args.queries)]
        timings = {}
        for name, batch in (("new texts", texts), ("texts asked before", texts)):
            times = []
            for text in batch:
                t = time.perf_counter()
                query = f"{url}api/search?q={urllib.parse.quote(text)}&top=24"
                answer = json.loads(get(query))
                times.append(time.perf_counter() - t)
                assert len(answer["results"]) == 24
            timings[name] = times
    finally:
        server.terminate()
        server.wait(10)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\n| {args.images:,} stored, {args.model} ({args.backend}) | p50 ms | p95 ms | max ms |")
    print("|---|---:|---:|---:|")
    for name, times in timings.items():
        ms = sorted(t * 1000 for t in times)
        p95 = ms[int(0.95 * (len(ms) - 1))]
        print(f"| {name} | {statistics.median(ms):.1f} | {p95:.1f} | {ms[-1]:.1f} |")
    print(f"targets: p50 <= 60 ms, p95 <= 150 ms; load average {load}")


if __name__ == "__main__":
    main()
