"""Duplicates in two tiers, as photo-library users ask for them:

- `exact`: the same bytes (the content hash): copies, backups, a photo imported twice.
- `near`: the same picture made again: resized, recompressed, re-exported to another format, edited lightly or
  cropped a little. Two photos are near duplicates when the DCT hashes of their whole pictures, or of their
  centres, differ in at most `near_threshold` of 64 bits (zsclip.photos.facts); groups are the connected
  components of that relation over one file per content.

In each group one file is kept and the others are said, with why: for exact copies the oldest (then the first by
path); for near duplicates the camera's original (its EXIF names a camera or a capture time), then the one with
most pixels (then the oldest, the largest file, the first by path). A copy kept in its exact group whose picture a
near group keeps in another file is not kept either. Flat pictures (a black frame, a blank sky) have no near
duplicates: their hashes say nothing. Documents and screenshots of one layout can lie within a few bits of each
other: look at the page before moving them. Measured
against imagededup on a near-duplicate set with known groups in bench/dupes.py (bench/README.md)."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections import defaultdict
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass

import numpy as np

from zsclip.core.limits import DEFAULT_MAX_PIXELS
from zsclip.photos.facts import Facts, facts_of
from zsclip.pipeline.sources import has_image_extension, looks_like_image, walk
from zsclip.store.cache import Cache

DEFAULT_NEAR = 10  # bits of 64: imagededup's PHash default too (bench/dupes.py measures 6..16)
TIERS = ("exact", "near")


@dataclass(frozen=True)
class DupeRecord:
    group: int  # numbered from 1 across both tiers, exact groups first
    tier: str
    path: str
    size: int
    width: int
    height: int
    keep: bool
    why: str
    key: str = ""  # the group's name that survives a resumed move: its content (exact) or its kept file (near)

    @property
    def pixels(self) -> int:
        return self.width * self.height

    def to_dict(self) -> dict:
        return {
            "group": self.group,
            "tier": self.tier,
            "path": self.path,
            "size": self.size,
            "pixels": self.pixels,
            "width": self.width,
            "height": self.height,
            "keep": self.keep,
            "why": self.why,
        }


def candidates(sources: list[tuple[str, bool]], recursive: bool = True, exclude: Container[str] = ()) -> list[str]:
    """The image files under the sources (as a walk finds them; `exclude` as for walk), each once by its real path:
    a file reached through two links (or a link and its target) is one file, never its own duplicate."""
    seen: dict[str, None] = {}
    for path, explicit in walk(sources, recursive, exclude=exclude):
        if explicit or has_image_extension(path) or looks_like_image(path):
            real = os.path.realpath(path)
            seen.setdefault(real if os.path.exists(real) else os.path.abspath(path), None)  # a dangling link: itself
    return list(seen)


def find_dupes(
    paths: Iterable[str],
    cache: Cache | None = None,
    *,
    near_threshold: int | None = DEFAULT_NEAR,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    on_file: Callable[[int], None] | None = None,
) -> tuple[list[list[DupeRecord]], list[tuple[str, str]]]:
    """Groups of duplicates among `paths` (files), exact groups first, each group's kept file first; and the files
    that could not be read. `near_threshold` None: the exact tier only."""
    facts, skipped = facts_of(paths, cache, hashes=True, max_pixels=max_pixels, on_file=on_file)
    by_content: dict[str, list[Facts]] = defaultdict(list)
    for f in facts.values():
        by_content[f.content_hash].append(f)
    groups: list[list[DupeRecord]] = []
    representatives = []
    for members in sorted(by_content.values(), key=lambda m: min(f.path for f in m)):
        kept = min(members, key=lambda f: (_mtime(f.path), f.path))
        representatives.append(kept)
        if len(members) > 1:
            groups.append(_exact_group(len(groups) + 1, kept, members))
    if near_threshold is not None:
        for component in near_components([f for f in representatives if not f.flat], near_threshold):
            groups.append(_near_group(len(groups) + 1, component, near_threshold))
    return _consistent(groups), skipped


def _consistent(groups: list[list[DupeRecord]]) -> list[list[DupeRecord]]:
    """One decision per file: a copy kept in its exact group whose picture a near group keeps in another file is
    not kept either (its exact group says which file keeps the picture)."""
    replaced = {r.path: (g[0].group, next(k.path for k in g if k.keep)) for g in groups if g[0].tier == "near"
                for r in g if not r.keep}  # fmt: skip
    out = []
    for group in groups:
        if group[0].tier == "exact" and group[0].path in replaced:
            number, kept = replaced[group[0].path]
            why = f"same content as the others here, and {kept} (group {number}) keeps the picture"
            group = [dataclasses.replace(group[0], keep=False, why=why), *group[1:]]
        out.append(group)
    return out


def _mtime(path: str) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return 0


def _exact_group(number: int, kept: Facts, members: list[Facts]) -> list[DupeRecord]:
    others = sorted((f for f in members if f is not kept), key=lambda f: f.path)
    why_kept = f"the oldest of {len(members)} copies with the same content"
    key = f"exact-{kept.content_hash[:12]}"
    records = [DupeRecord(number, "exact", kept.path, kept.size, kept.width, kept.height, True, why_kept, key)]
    for f in others:
        why = f"same content as {kept.path}"
        records.append(DupeRecord(number, "exact", f.path, f.size, f.width, f.height, False, why, key))
    return records


def _near_group(number: int, members: list[tuple[Facts, int]], threshold: int) -> list[DupeRecord]:
    """`members`: (facts, bits from the kept one, by the nearer of the two hashes)."""
    ordered = sorted(
        members, key=lambda m: (not _original(m[0]), -m[0].pixels, _mtime(m[0].path), -m[0].size, m[0].path)
    )
    kept = ordered[0][0]
    runner = ordered[1][0]
    key = f"near-{hashlib.sha256(kept.path.encode('utf-8', 'surrogateescape')).hexdigest()[:12]}"
    if _original(kept) and not _original(runner):
        why_kept = (
            f"the camera's original (EXIF {kept.capture.camera or kept.capture.taken}; {kept.width}x{kept.height})"
        )
    elif kept.pixels > runner.pixels:
        why_kept = f"most pixels ({kept.width}x{kept.height})"
    elif _mtime(kept.path) < _mtime(runner.path):
        why_kept = f"the oldest file with the most pixels ({kept.width}x{kept.height})"
    elif kept.size > runner.size:
        why_kept = f"the largest file with the most pixels ({kept.size:,} bytes)"
    else:
        why_kept = "the first by path of equal copies"
    records = [DupeRecord(number, "near", kept.path, kept.size, kept.width, kept.height, True, why_kept, key)]
    for f, _ in ordered[1:]:
        bits = hamming(kept, f)
        why = f"near duplicate of {kept.path} ({bits} of 64 bits differ; {f.width}x{f.height})"
        records.append(DupeRecord(number, "near", f.path, f.size, f.width, f.height, False, why, key))
    return records


def _original(f: Facts) -> bool:
    """What a camera wrote (its EXIF names the camera or the capture time): an export or a resize usually lost it."""
    return bool(f.capture.camera or f.capture.taken)


def hamming(a: Facts, b: Facts) -> int:
    """The nearer of the two hashes' distances, in bits."""
    full = bin((a.phash ^ b.phash) & (2**64 - 1)).count("1")
    center = bin((a.center ^ b.center) & (2**64 - 1)).count("1")
    return min(full, center)


def near_components(items: list[Facts], threshold: int) -> list[list[tuple[Facts, int]]]:
    """Connected components (size >= 2) of "a hash within `threshold` bits", in order of their first path."""
    n = len(items)
    if n < 2:
        return []
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for column in ("phash", "center"):
        codes = np.array([getattr(f, column) for f in items], dtype=np.int64)
        for i, j in pairs_within(codes, threshold):
            a, b = find(int(i)), find(int(j))
            if a != b:
                parent[max(a, b)] = min(a, b)
    components: dict[int, list[int]] = defaultdict(list)
    for i in range(n):
        components[find(i)].append(i)
    out = []
    for members in components.values():
        if len(members) > 1:
            out.append([(items[i], 0) for i in members])
    return sorted(out, key=lambda c: min(f.path for f, _ in c))


def pairs_within(codes: np.ndarray, threshold: int) -> np.ndarray:
    """(i, j) pairs, i < j, of 64-bit codes within `threshold` bits: faiss's binary index where installed (100,000
    codes in seconds), else NumPy in blocks."""
    try:
        import faiss  # optional: the faiss extra
    except ImportError:
        faiss = None
    as_bytes = np.ascontiguousarray(codes.astype(np.int64).view(np.uint8).reshape(-1, 8))
    found = []
    if faiss is not None:
        index = faiss.IndexBinaryFlat(64)
        index.add(as_bytes)
        limits, _, neighbours = index.range_search(as_bytes, threshold + 1)  # radius is exclusive
        rows = np.repeat(np.arange(len(codes)), np.diff(limits).astype(np.int64))
        pairs = np.stack([rows, neighbours.astype(np.int64)], axis=1)
        return pairs[pairs[:, 0] < pairs[:, 1]]
    unsigned = codes.astype(np.int64).view(np.uint64)
    block = 1024
    for start in range(0, len(codes), block):
        x = unsigned[start : start + block, None] ^ unsigned[None, :]
        bits = np.bitwise_count(x) if hasattr(np, "bitwise_count") else _popcount(x)
        i, j = np.nonzero(bits <= threshold)
        i = i + start
        keep = i < j
        found.append(np.stack([i[keep], j[keep]], axis=1))
    return np.concatenate(found) if found else np.empty((0, 2), dtype=np.int64)


def _popcount(x: np.ndarray) -> np.ndarray:
    return np.unpackbits(x.view(np.uint8).reshape(*x.shape, 8), axis=-1).sum(-1)
