"""Texts x a video's frame embeddings -> similarity curves -> the segments that match each text, unsupervised.

The seed recipe: cosine similarity of every sampled frame to the text (a curve S over time), then the segment
[vs, ve] that matches best. Taken literally, "highest mean similarity" is degenerate (one frame always wins) and
all-pairs search is O(m^2). Instead, per text:

- the curve is lightly smoothed (a centred moving average over about `smooth` seconds, at least 3 samples when
  fps allows), which leaves the time where a step crosses half height where it was;
- a baseline comes from the (unsmoothed) curve itself, midway between its median (what most of the video looks
  like to this text) and its maximum (what the best match looks like); frames above it count for a segment,
  frames below against it. A text that matches most of the video raises its own median, so segments then
  shrink toward the strongest part;
- the segment is the maximum-sum run of (smoothed similarity - baseline) whose length lies within
  [min_seconds, max_seconds]: prefix sums and a sliding-window minimum find it in O(m); its end samples whose
  own, unsmoothed similarity is below the baseline are then trimmed (smoothing spreads a match into its
  neighbours; the raw curve places the edges);
- `top` > 1 repeats the search in what the earlier segments leave free (N non-overlapping segments, best first
  by that sum; after the first, only runs whose sum is positive);
- `ordered` reads the texts as a narration: one segment per text, in the texts' order, not overlapping, chosen
  together to maximise the total sum by dynamic programming over the curves, O(texts x m).

Samples that fell in a damaged stretch of the video count as far below every baseline, so no segment spans them
unless nothing else fits. Times are seconds: sample k covers [k/fps, (k+1)/fps), so a segment of samples [i, j)
is [i/fps, j/fps].
"""

from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from zsclip.core.errors import UsageError, ZsclipError
from zsclip.core.wording import plural
from zsclip.video.frames import embed_video
from zsclip.video.sampling import check_fps
from zsclip.zeroshot import classifier

FORMATS = ("table", "json", "jsonl", "csv")
_DAMAGED = -1e6  # per damaged sample: below any possible sum of real similarities


# A segment is found when its frames match its text FOUND_Z standard deviations better than they match the
# reference bank (the 1,000 ImageNet class names, "a photo of a {}."), on average over the segment. Measured in
# bench/locate_found.py (40 videos x 36 texts, the shipped model): every text that was on screen scored >= 2.37,
# 98.2% of texts sharing nothing with what was on screen stayed below 2.0.
FOUND_Z = 2.0
REFERENCE_TEMPLATE = "a photo of a {}."


@dataclass
class Segment:
    text: str
    start: float  # seconds
    end: float
    score: float  # mean cosine similarity of the segment's frames to the text
    found: bool = True  # whether the text is there (see is_found), not only the best run of its curve
    strength: float = float("nan")  # mean over the segment of the text's z-score against the reference bank

    def to_dict(self) -> dict:
        return {
            "text": self.text,
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "score": round(self.score, 6),
            "found": self.found,
            "strength": None if math.isnan(self.strength) else round(self.strength, 3),
        }


def reference_vectors(model, cache=None) -> np.ndarray:
    """The reference bank [1000, dim]: what the frames of a video look like to a thousand everyday concepts. Its
    text vectors are cached like any prompt, so only the first locate with a model encodes them."""
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    return text_embeddings(model, list(IMAGENET_CLASSNAMES), [REFERENCE_TEMPLATE], cache)


def zscores(curves: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """[texts, m]: each frame's similarity to each text, in standard deviations above its mean similarity to the
    reference bank. The frame's common response (any shape on screen lifts every text about shapes; a bright
    frame lifts many) cancels out, so a text stands out only on frames it matches better than other things."""
    mean, std = reference.mean(axis=0), reference.std(axis=0)
    return (curves - mean[None, :]) / np.maximum(std, 1e-6)[None, :]


def found_rule(min_score: float | None = None) -> str:
    rule = f"strength >= {FOUND_Z:g}"
    return rule + (f" and score >= {min_score:g}" if min_score is not None else "")


def is_found(strength: float, score: float, min_score: float | None = None) -> bool:
    """The text is there: the segment's frames match it at least FOUND_Z standard deviations better than they
    match the reference bank (on average over the segment), and, with `min_score` (--min-score), its mean cosine
    similarity reaches that too."""
    if min_score is not None and not score >= min_score:
        return False
    return bool(strength >= FOUND_Z)


@dataclass
class LocateResult:
    """Where each text is in one video, and the curves that say so."""

    video: str
    duration: float
    fps: float
    texts: list[str]
    times: np.ndarray  # [m] sample times, seconds
    curves: np.ndarray  # [texts, m] cosine similarity per sample (NaN where the video did not decode)
    smoothed: np.ndarray  # [texts, m] the curves the search used
    baselines: np.ndarray  # [texts]
    segments: list[Segment]  # in the order of the texts; with top N, up to N per text, best first
    warnings: list[str] = field(default_factory=list)
    encoded: int = 0  # frames encoded by this call (0 when the image-embedding store had them all)
    reused: int = 0

    @property
    def frames(self) -> int:
        return int(np.isfinite(self.curves[0]).sum()) if len(self.curves) else 0

    def to_dict(self) -> dict:
        return {
            "video": self.video,
            "duration": round(self.duration, 3),
            "fps": self.fps,
            "frames": self.frames,
            "segments": [s.to_dict() for s in self.segments],
        }


# -- options -----------------------------------------------------------------------------------------------
def read_text_file(path: str | os.PathLike) -> list[str]:
    """One text per line; blank lines and lines starting with # are left out."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--text-file {path}: cannot read it ({exc})") from exc
    texts = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not texts:
        raise UsageError(f"--text-file {path}: holds no text (one text per line)")
    return texts


def check_options(
    texts: Sequence[str],
    fps: float = 2.0,
    min_seconds: float | None = None,
    max_seconds: float | None = None,
    top: int = 1,
    ordered: bool = False,
) -> list[str]:
    """Usage errors that need no model or video, so they come at once; returns the texts, stripped."""
    texts = [t.strip() for t in texts]
    if not texts:
        raise UsageError("no text given: use --text 'a dog catches a frisbee' (repeatable) or --text-file FILE")
    if any(not t for t in texts):
        raise UsageError("--text is empty: give the words to look for")
    if not ordered and len(set(texts)) < len(texts):
        raise UsageError("the same --text is given twice; give each text once")
    check_fps(fps)
    for name, value in (("--min-seconds", min_seconds), ("--max-seconds", max_seconds)):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise UsageError(f"{name} {value}: must be a positive number of seconds")
    if min_seconds and max_seconds and max_seconds < min_seconds:
        raise UsageError(f"--max-seconds {max_seconds} is less than --min-seconds {min_seconds}")
    if max_seconds is not None and max_seconds * fps < 1:
        raise UsageError(f"--max-seconds {max_seconds} is shorter than one sample at --fps {fps} ({1 / fps:g} s)")
    if top < 1:
        raise UsageError(f"--top {top}: must be at least 1")
    if ordered and top != 1:
        raise UsageError("--ordered gives one segment per text; leave out --top")
    return texts


def _lengths(m: int, fps: float, min_seconds: float | None, max_seconds: float | None) -> tuple[int, int]:
    lmin = max(1, math.ceil(min_seconds * fps - 1e-9)) if min_seconds else 1
    lmax = min(m, math.floor(max_seconds * fps + 1e-9)) if max_seconds else m
    return lmin, lmax


# -- curves ------------------------------------------------------------------------------------------------
def smooth(curve: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average over `window` samples (odd), of the samples that exist; NaN stays NaN."""
    if window <= 1:
        return curve.astype(np.float64)
    valid = np.isfinite(curve)
    values = np.where(valid, curve, 0.0)
    half = window // 2
    kernel = np.ones(window)
    sums = np.convolve(np.pad(values, half), kernel, mode="valid")
    counts = np.convolve(np.pad(valid.astype(float), half), kernel, mode="valid")
    out = sums / np.maximum(counts, 1)
    out[~valid] = np.nan
    return out


def baseline(curve: np.ndarray) -> float:
    """Midway between the curve's median and its maximum."""
    finite = curve[np.isfinite(curve)]
    return float((np.median(finite) + finite.max()) / 2)


def smoothing_window(fps: float, seconds: float) -> int:
    w = max(1, round(seconds * fps))
    return w + 1 - w % 2  # odd, so the average is centred


# -- segment search ----------------------------------------------------------------------------------------
def best_segment(d: np.ndarray, lmin: int, lmax: int, lo: int = 0, hi: int | None = None) -> tuple[int, int, float]:
    """The run [i, j) within [lo, hi) with lmin <= j - i <= lmax of largest sum of d, in O(hi - lo); (i, j, sum),
    or (-1, -1, -inf) when [lo, hi) is shorter than lmin."""
    hi = len(d) if hi is None else hi
    prefix = np.concatenate([[0.0], np.cumsum(d[lo:hi], dtype=np.float64)])
    n = hi - lo
    best = (-1, -1, -math.inf)
    window: deque[int] = deque()  # candidate starts, prefix values increasing: the front is the minimum
    for j in range(lmin, n + 1):
        i_new = j - lmin
        while window and prefix[window[-1]] >= prefix[i_new]:
            window.pop()
        window.append(i_new)
        while window[0] < j - lmax:
            window.popleft()
        total = prefix[j] - prefix[window[0]]
        if total > best[2]:
            best = (window[0] + lo, j + lo, float(total))
    return best


def top_segments(d: np.ndarray, lmin: int, lmax: int, n: int) -> list[tuple[int, int, float]]:
    """Up to n non-overlapping runs, best first: the best run, then the best in what it leaves free, and so on;
    after the first, only runs of positive sum."""
    free = [(0, len(d))]
    found: list[tuple[int, int, float]] = []
    while len(found) < n and free:
        candidates = [(best_segment(d, lmin, lmax, a, b), (a, b)) for a, b in free]
        (i, j, total), (a, b) = max(candidates, key=lambda c: c[0][2])
        if i < 0 or (found and total <= 0):
            break
        found.append((i, j, total))
        free.remove((a, b))
        free += [(x, y) for x, y in ((a, i), (j, b)) if y - x >= lmin]
    return found


def ordered_segments(ds: np.ndarray, lmin: int, lmax: int) -> list[tuple[int, int]]:
    """One run per row of ds (texts in narration order), in that order, not overlapping, lengths within
    [lmin, lmax], maximising the total sum; O(rows x m) by dynamic programming with sliding-window maxima.

    best[t][j]: the best total for the first t texts using samples [0, j); the t-th text's run either ends
    before j (best[t][j-1]) or is [i, j) with the earlier texts in [0, i): max over i of best[t-1][i] - P_t[i],
    plus P_t[j], where P_t are prefix sums of row t."""
    k, m = ds.shape
    if k * lmin > m:
        raise ZsclipError(
            f"the video has {plural(m, 'sample')}: too few for {k} texts of at least {plural(lmin, 'sample')} each"
        )
    neg = -math.inf
    prev = np.zeros(m + 1)  # zero texts placed: total 0 whatever the prefix
    choice = np.full((k, m + 1), -1, dtype=np.int64)  # start of text t's run ending at j; -1: ends earlier
    for t in range(k):
        prefix = np.concatenate([[0.0], np.cumsum(ds[t], dtype=np.float64)])
        cur = np.full(m + 1, neg)
        window: deque[int] = deque()  # starts i, best[t-1][i] - prefix[i] decreasing
        for j in range(1, m + 1):
            i_new = j - lmin
            if i_new >= 0 and prev[i_new] > neg:
                value = prev[i_new] - prefix[i_new]
                while window and prev[window[-1]] - prefix[window[-1]] <= value:
                    window.pop()
                window.append(i_new)
            while window and window[0] < j - lmax:
                window.popleft()
            cur[j] = cur[j - 1]
            if window:
                i = window[0]
                total = prev[i] - prefix[i] + prefix[j]
                if total > cur[j]:
                    cur[j], choice[t, j] = total, i
        prev = cur
    runs: list[tuple[int, int]] = []
    j = m
    for t in range(k - 1, -1, -1):
        while choice[t, j] < 0:
            j -= 1
        i = int(choice[t, j])
        runs.append((i, j))
        j = i
    return runs[::-1]


# -- the whole query ---------------------------------------------------------------------------------------
def text_embeddings(model, texts: Sequence[str], templates=None, cache=None) -> np.ndarray:
    """Unit-norm embeddings [texts, dim]; each text as given, or ensembled over a template set like a class name."""

    return classifier.text_embeddings(model, list(texts), templates or ("{}",), cache=cache)[0]


def locate(
    model,
    video: str | os.PathLike,
    texts: Sequence[str],
    fps: float = 2.0,
    *,
    min_seconds: float | None = None,
    max_seconds: float | None = None,
    top: int = 1,
    ordered: bool = False,
    templates=None,
    smooth_seconds: float = 1.0,
    min_score: float | None = None,
    batch_size: int | None = None,
    store: bool = True,
    cache=None,
    progress: Callable[[int, int | None], None] | None = None,
) -> LocateResult:
    """Find where each text happens in `video`, with no training: frames sampled at `fps` and encoded (or taken
    from the image-embedding store), one similarity curve per text, segments as the module docstring says.

    Args:
        model: a loaded model (zsclip.load_model).
        video: a video file (the `video` extra reads it).
        texts: what to find, one segment list per text.
        fps: frames sampled per second.
        min_seconds, max_seconds: the shortest and longest segment; top: segments per text; ordered: the texts
            happen in this order (one segment each).
        templates: prompt templates for the texts (default: the text as it is).
        smooth_seconds: the curve's smoothing window; min_score: an absolute bar on a segment's mean cosine.
        batch_size, store, cache: how frames are encoded and kept; progress: called with (done, total).

    Returns:
        A LocateResult: per text its segments (start, end, score, `found` by zsclip.video.locate.found_rule) and
        the similarity curve.

    Examples:
        >>> model = zsclip.load_model("shapes")
        >>> result = zsclip.locate(model, "clip.mp4", ["a red circle"], fps=2)
        >>> [s.to_dict() for s in result.segments]
    """
    texts = check_options([texts] if isinstance(texts, str) else texts, fps, min_seconds, max_seconds, top, ordered)
    check_min_score(min_score)
    frames = embed_video(model, str(video), fps, batch_size=batch_size, store=store, cache=cache, progress=progress)
    weights = text_embeddings(model, texts, templates, cache)
    features = np.nan_to_num(frames.features).T
    curves = weights @ features  # [texts, m]
    curves[:, ~frames.valid] = np.nan
    z = zscores(curves, reference_vectors(model, cache) @ features)
    return _search(frames, texts, curves, min_seconds, max_seconds, top, ordered, smooth_seconds, min_score, z)


def check_min_score(min_score: float | None) -> None:
    if min_score is not None and not -1.0 <= min_score <= 1.0:
        raise UsageError(f"--min-score {min_score}: must be a cosine similarity between -1 and 1")


def _search(frames, texts, curves, min_seconds, max_seconds, top, ordered, smooth_seconds, min_score=None, z=None):
    m, fps = curves.shape[1], frames.fps
    window = smoothing_window(fps, smooth_seconds)
    smoothed = np.stack([smooth(c, window) for c in curves])
    bases = np.array([baseline(c) for c in curves])  # raw: smoothing would lower the maximum it is taken from
    ds = np.where(np.isfinite(smoothed), smoothed - bases[:, None], _DAMAGED)
    lmin, lmax = _lengths(m, fps, min_seconds, max_seconds)
    if lmin > m:
        raise ZsclipError(
            f"{frames.path}: lasts {frames.duration:.1f} s, shorter than --min-seconds {min_seconds}; lower it"
        )
    if ordered:
        runs = [[(i, j)] for i, j in ordered_segments(ds, lmin, lmax)]
    else:
        runs = [[(i, j) for i, j, _ in top_segments(d, lmin, lmax, top)] for d in ds]
    segments = []
    for t, text in enumerate(texts):
        for i, j in runs[t]:
            i, j = trim(curves[t], bases[t], i, j, lmin)
            score = float(np.nanmean(curves[t, i:j])) if np.isfinite(curves[t, i:j]).any() else float("nan")
            strength = float(np.nanmean(z[t, i:j])) if z is not None and np.isfinite(z[t, i:j]).any() else math.nan
            found = is_found(strength, score, min_score) if z is not None else True
            segments.append(Segment(text, i / fps, min(j / fps, frames.duration), score, found, strength))
    return LocateResult(
        frames.path,
        frames.duration,
        fps,
        list(texts),
        frames.times,
        curves,
        smoothed,
        bases,
        segments,
        frames.warnings,
        frames.encoded,
        frames.reused,
    )


def trim(curve: np.ndarray, base: float, i: int, j: int, lmin: int) -> tuple[int, int]:
    """Drop end samples whose own (unsmoothed) similarity is below the baseline: smoothing finds the segment
    robustly but spreads a strong match into its neighbours, so the edges are decided on the raw curve."""
    while j - i > lmin and not curve[i] >= base:  # `not >=`: a NaN (damaged) edge goes too
        i += 1
    while j - i > lmin and not curve[j - 1] >= base:
        j -= 1
    return i, j


def temporal_iou(a: tuple[float, float], b: tuple[float, float]) -> float:
    """|a & b| / |a | b| for two time intervals."""
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union > 0 else 0.0
