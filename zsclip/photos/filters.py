"""Search by when, where and which camera: `--taken-after`, `--taken-before` (ISO dates or times, as the camera's
clock wrote them), `--camera` (a make or model, any part of it, any case) and `--has-gps`, applied to the stored
images before they are ranked, from the EXIF facts kept in the cache (zsclip.photos.facts)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from zsclip.core.errors import UsageError
from zsclip.photos.exif import Capture
from zsclip.photos.facts import facts_of
from zsclip.store.cache import Cache


@dataclass(frozen=True)
class PhotoFilter:
    taken_after: str | None = None  # inclusive: taken at or after
    taken_before: str | None = None  # exclusive: taken before
    camera: str | None = None
    has_gps: bool | None = None  # True: only photos with a position; False: only those without

    @classmethod
    def checked(
        cls,
        taken_after: str | None = None,
        taken_before: str | None = None,
        camera: str | None = None,
        has_gps: bool | None = None,
    ) -> PhotoFilter:
        after = iso_when(taken_after, "--taken-after") if taken_after else None
        before = iso_when(taken_before, "--taken-before") if taken_before else None
        if after and before and before <= after:
            raise UsageError(f"--taken-before {taken_before} is not after --taken-after {taken_after}: nothing matches")
        if camera is not None and not camera.strip():
            raise UsageError("--camera: give a make or model (any part of it, e.g. 'pixel' or 'canon')")
        return cls(after, before, camera.strip() if camera else None, has_gps)

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.taken_after, self.taken_before, self.camera, self.has_gps))

    def matches(self, capture: Capture) -> bool:
        if self.taken_after or self.taken_before:
            if capture.taken is None:
                return False
            if self.taken_after and capture.taken < self.taken_after:
                return False
            if self.taken_before and capture.taken >= self.taken_before:
                return False
        if self.camera:
            known = " ".join(x for x in (capture.make, capture.model) if x).casefold()
            if self.camera.casefold() not in known:
                return False
        return self.has_gps is None or capture.gps == self.has_gps

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def iso_when(text: str, option: str) -> str:
    """A date (2024-06-01) or a date and time (2024-06-01T14:30, 2024-06-01 14:30:05) as the ISO text EXIF times are
    compared with; one line naming the option otherwise."""
    value = text.strip().replace(" ", "T", 1)
    try:
        if len(value) == 10:
            return dt.date.fromisoformat(value).isoformat()
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(f"{option} {text}: give an ISO date such as 2024-06-01 or 2024-06-01T14:30") from None
    if when.tzinfo is not None or when.microsecond:  # EXIF times are the camera clock's, to the second, no zone
        raise UsageError(f"{option} {text}: give the camera's local time to the second, with no time zone")
    return when.isoformat(timespec="seconds")


def allowed_rows(paths: list[str], rows: np.ndarray, where: PhotoFilter, cache: Cache) -> np.ndarray:
    """The rows (indices into `paths`) whose photos pass `where`; EXIF headers read once into the cache."""
    chosen = [paths[r] for r in rows.tolist()]
    facts, _ = facts_of(chosen, cache)
    keep = [r for r, p in zip(rows.tolist(), chosen, strict=True) if p in facts and where.matches(facts[p].capture)]
    return np.asarray(keep, dtype=np.int64)


def as_ranges(rows: np.ndarray) -> list[tuple[int, int]]:
    """Sorted row indices as runs [lo, hi) of consecutive rows."""
    if not len(rows):
        return []
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    starts = np.concatenate([[0], breaks])
    ends = np.concatenate([breaks, [len(rows)]])
    return [(int(rows[a]), int(rows[b - 1]) + 1) for a, b in zip(starts, ends, strict=True)]
