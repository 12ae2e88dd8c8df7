"""`zsclip dupes` against imagededup (the reference near-duplicate finder), in one run on the same files.

1. Quality: a near-duplicate set made from ../shared/data/imagenet-samples with known groups (each of N
   originals gets 0-4 of: resized to half, recompressed at quality 40, cropped 6 % a side, brightened and
   contrasted, re-exported as PNG, a quarter-size WebP thumbnail; a third get none), scored with imagededup's own
   evaluation (MAP, precision and recall of duplicate pairs) for imagededup's PHash and for zsclip at the same
   Hamming thresholds. imagededup's CNN needs weights from the internet: tried, and said when not available.
2. Scale: N stored photos (default 100,000: their facts in the cache, as a first `zsclip dupes` leaves them, with
   planted exact and near groups) grouped from the store, whole: a stat per file, the stored facts, both tiers.
   Target (issue 33): 100,000 in <= 60 s on this machine.

    python bench/dupes.py --originals 150 --scale 100000
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zsclip.photos.dupes import find_dupes
from zsclip.photos.facts import FactsTable
from zsclip.store.cache import Cache
from zsclip.store.identity import stat_of

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenet-samples"


def say(line: str) -> None:
    print(line, flush=True)


def near_set(out: Path, n: int, seed: int = 0) -> list[list[str]]:
    """The near-duplicate set: returns its groups (file names)."""
    sources = sorted(DATA.glob("n*/*.JPEG"))
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    groups = []
    for i, path in enumerate(rng.sample(sources, min(n, len(sources)))):
        im = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
        w, h = im.size
        base = f"img{i:04d}"
        im.save(out / f"{base}.jpg", quality=92)
        members = [f"{base}.jpg"]
        if i % 3 != 2:
            c = 0.06
            variants = [
                ("resized", im.resize((w // 2, h // 2), Image.LANCZOS), "jpg", 90),
                ("recompressed", im, "jpg", 40),
                ("cropped", im.crop((int(w * c), int(h * c), int(w * (1 - c)), int(h * (1 - c)))), "jpg", 90),
                ("edited", ImageEnhance.Contrast(ImageEnhance.Brightness(im).enhance(1.15)).enhance(1.1), "jpg", 90),
                ("reexported", im, "png", None),
                ("thumbnail", im.resize((max(1, w // 4), max(1, h // 4)), Image.BILINEAR), "webp", 80),
            ]
            for name, v, ext, q in rng.sample(variants, rng.randint(1, 4)):
                fn = f"{base}_{name}.{ext}"
                v.save(out / fn, **({"quality": q} if q else {}))
                members.append(fn)
        groups.append(members)
    return groups


def truth_of(groups: list[list[str]]) -> dict[str, list[str]]:
    return {f: [x for x in g if x != f] for g in groups for f in g}


def zsclip_map(folder: Path, threshold: int, cache: Cache) -> tuple[dict[str, list[str]], float]:
    """zsclip's groups as imagededup's retrieved map: every file with the others of its group (both tiers joined)."""
    start = time.perf_counter()
    groups, _ = find_dupes([str(p) for p in sorted(folder.iterdir())], cache, near_threshold=threshold)
    seconds = time.perf_counter() - start
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            x = parent[x]
        return x

    for group in groups:
        names = [os.path.basename(r.path) for r in group]
        for name in names[1:]:
            parent[find(name)] = find(names[0])
    members: dict[str, list[str]] = {}
    for name in parent:
        members.setdefault(find(name), []).append(name)
    retrieved = {p.name: [] for p in folder.iterdir()}
    for names in members.values():
        for name in names:
            retrieved[name] = [x for x in names if x != name]
    return retrieved, seconds


def scores(truth, retrieved) -> dict:
    from imagededup.evaluation import evaluate

    with contextlib.redirect_stdout(io.StringIO()):
        m = evaluate(truth, retrieved)
    return {"map": m["map"], "precision": float(m["precision"][1]), "recall": float(m["recall"][1])}


def quality(args, work: Path) -> None:
    import logging

    logging.disable(logging.INFO)
    from imagededup.methods import PHash

    folder = work / "near"
    groups = near_set(folder, args.originals)
    truth = truth_of(groups)
    files = sum(len(g) for g in groups)
    say(f"near-duplicate set: {files} files, {sum(len(g) > 1 for g in groups)} groups with duplicates")
    start = time.perf_counter()
    phash = PHash(verbose=False)
    encodings = phash.encode_images(image_dir=str(folder))
    theirs_encode = time.perf_counter() - start
    cache = Cache(work / "cache")
    _, first = zsclip_map(folder, args.thresholds[0], cache)  # reads every file: hashes into the cache
    say(f"reading and hashing {files} files: imagededup PHash {theirs_encode:.1f} s, zsclip {first:.1f} s")
    say("| threshold (bits) | imagededup PHash MAP | precision | recall | zsclip MAP | precision | recall |")
    say("|---|---|---|---|---|---|---|")
    import warnings

    warnings.simplefilter("ignore")  # imagededup warns that encodings given make its worker count moot
    for t in args.thresholds:
        theirs = scores(truth, phash.find_duplicates(encoding_map=encodings, max_distance_threshold=t))
        ours = scores(truth, zsclip_map(folder, t, cache)[0])
        say(
            f"| {t} | {theirs['map']:.3f} | {theirs['precision']:.3f} | {theirs['recall']:.3f} | {ours['map']:.3f} | "
            f"{ours['precision']:.3f} | {ours['recall']:.3f} |"
        )
    try:
        from imagededup.methods import CNN

        with contextlib.redirect_stderr(io.StringIO()):
            cnn = CNN(verbose=False)
        found = cnn.find_duplicates(image_dir=str(folder), min_similarity_threshold=0.9)
        say(f"imagededup CNN (similarity 0.9): {scores(truth, found)}")
    except Exception as exc:  # its weights come from the internet
        say(f"imagededup CNN: not available here ({type(exc).__name__}: {str(exc).splitlines()[0][:100]})")


def scale(args, work: Path) -> None:
    """N files whose facts are stored (as a first dupes run leaves them); then one timed grouping."""
    folder = work / "many"
    folder.mkdir()
    rng = np.random.default_rng(0)
    n = args.scale
    hashes = rng.integers(-(2**63), 2**63 - 1, size=n, dtype=np.int64)
    centers = rng.integers(-(2**63), 2**63 - 1, size=n, dtype=np.int64)
    contents = [f"{i:032x}" for i in range(n)]
    for i in range(1, n, 50):  # planted: an exact copy every 50 files, a near one (3 bits off) every 50
        contents[i] = contents[i - 1]
        hashes[i], centers[i] = hashes[i - 1], centers[i - 1]
    for i in range(2, n, 50):
        hashes[i] = hashes[i - 2] ^ 0b10101
        centers[i] = rng.integers(-(2**63), 2**63 - 1, dtype=np.int64)
    start = time.perf_counter()
    paths = []
    for i in range(n):
        path = folder / f"{i:06d}.jpg"
        path.write_bytes(b"x")
        paths.append(str(path))
    cache = Cache(work / "scale-cache")
    FactsTable(cache)  # makes the table
    rows = []
    for i, path in enumerate(paths):
        key = stat_of(path).key()
        rows.append((path, *key[1:], 4000, 3000, None, None, None, 0, contents[i], int(hashes[i]), int(centers[i]), 0))
    with cache.conn:
        cache.conn.executemany("INSERT OR REPLACE INTO photo_facts VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
    say(f"stored {n:,} photos' facts in {time.perf_counter() - start:.1f} s (setup, not timed)")
    start = time.perf_counter()
    groups, _ = find_dupes(paths, cache, near_threshold=10)
    seconds = time.perf_counter() - start
    exact = sum(1 for g in groups if g[0].tier == "exact")
    say(f"| {n:,} stored photos | {seconds:.1f} s | {exact:,} exact and {len(groups) - exact:,} near groups |")
    say(f"target <= 60 s: {'met' if seconds <= 60 else 'MISSED'} ({seconds:.1f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--originals", type=int, default=150)
    parser.add_argument("--thresholds", type=lambda s: [int(x) for x in s.split(",")], default=[10, 12, 14, 16])
    parser.add_argument("--scale", type=int, default=100_000)
    args = parser.parse_args()
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in lines if "model name" in line), "?")
    load, version = os.getloadavg()[0], platform.python_version()
    say(f"start: load average {load:.2f}, {cpu}, {os.cpu_count()} CPUs, Python {version}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if DATA.exists():
            quality(args, work)
        else:
            say(f"quality: skipped ({DATA} not found)")
        scale(args, work)
    say(f"end: load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
