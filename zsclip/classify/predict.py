"""Image embeddings x classifier -> predictions: logits = logit_scale * cosine, softmax, top-k, abstain."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from zsclip.classify.recheck import Recheck
from zsclip.core.errors import UsageError, ZsclipError
from zsclip.core.limits import check_ranking
from zsclip.engines import ReadOptions, Runtime, embed_stream, reading
from zsclip.models import ClipModel
from zsclip.pipeline.sources import expand_sources
from zsclip.zeroshot import similarity
from zsclip.zeroshot.classifier import Classifier

UNKNOWN = "unknown"


@dataclass
class Prediction:
    path: str
    label: str
    prob: float
    top_k: list[dict] = field(default_factory=list)  # [{"label": str, "prob": float}], best first
    abstained: bool = False
    extra: dict = field(default_factory=dict)  # columns asked for besides (classify --exif: taken, camera, gps)

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "label": self.label,
            "prob": self.prob,
            "top_k": self.top_k,
            "abstained": self.abstained,
            **self.extra,
        }


@dataclass
class Skipped:
    path: str
    reason: str

    def to_dict(self) -> dict:
        return {"path": self.path, "reason": self.reason}


def probabilities(image_features: np.ndarray, classifier: Classifier) -> np.ndarray:
    """Softmax over classes of logit_scale * cosine similarity (or of a few-shot head's logits); features must be
    unit-norm."""
    if classifier.head is not None:
        probs = similarity.softmax(classifier.head.logits(image_features))
    else:
        probs = similarity.probabilities(image_features, classifier.weights, classifier.logit_scale)
    return finite(probs)


def finite(probs: np.ndarray, paths: list[str] | None = None) -> np.ndarray:
    """`probs`, or one line naming the first image (of `paths`, where known) whose scores are NaN or infinite: eval
    scored such images as class 0 and exited 0, and no record may hold NaN (it is not JSON either)."""
    bad = ~np.isfinite(probs).all(-1)
    if bad.any():
        first = f"{paths[int(np.flatnonzero(bad)[0])]}: " if paths else ""
        raise ZsclipError(
            f"{first}the model gave NaN or infinite scores for {int(bad.sum())} image(s) (damaged "
            "weights, or a classifier file whose values overflow)"
        )
    return probs


def check_options(classifier: Classifier, top_k: int | None, threshold: float | None) -> int:
    """Validate --top-k/--threshold against the classifier; returns the effective k."""
    check_ranking(top_k, threshold)
    if threshold is not None:
        clash = [n for n in classifier.labels if n.strip().casefold() == UNKNOWN]
        if clash:
            raise UsageError(
                f"class {clash[0]!r} reads like {UNKNOWN!r}, the label of an image below --threshold; rename the "
                f"class (e.g. '{clash[0]} object') so the two can be told apart"
            )
    return min(3 if top_k is None else top_k, len(classifier))


def predict(
    paths: list[str], probs: np.ndarray, classifier: Classifier, top_k: int, threshold: float | None
) -> list[Prediction]:
    finite(probs, paths)
    values, indices = similarity.top_k(probs, top_k)
    labels = classifier.labels
    out = []
    for path, vals, idxs in zip(paths, values.tolist(), indices.tolist(), strict=True):
        ranked = [{"label": labels[i], "prob": p} for p, i in zip(vals, idxs, strict=True)]
        abstain = threshold is not None and vals[0] < threshold
        out.append(Prediction(path, UNKNOWN if abstain else ranked[0]["label"], vals[0], ranked, abstain))
    return out


def classify(
    model: ClipModel,
    classifier: Classifier,
    paths: Iterable[str | os.PathLike] | str | os.PathLike,
    read: ReadOptions | None = None,
    runtime: Runtime | None = None,
    *,
    top_k: int | None = None,
    threshold: float | None = None,
    on_batch: Callable[[int, int], None] | None = None,
    recheck: Recheck | None = None,
    **read_fields,
) -> Iterator[Prediction | Skipped]:
    """Stream a Prediction per image and a Skipped per file that could not be read, in walk order.

    Args:
        model: a loaded model (zsclip.load_model).
        classifier: the class vectors (zsclip.build_classifier, or a fitted few-shot classifier file's).
        paths: image files, folders, `@list.txt` files, or the (path, explicit) pairs
            zsclip.pipeline.sources.expand_sources made of them (a caller that checked them reads no list twice).
        read: how files are read (zsclip.engines.ReadOptions: batch_size, workers, recursive, store, exact,
            max_pixels, file_timeout, exclude, shard); its fields may also be given by name (`batch_size=16`).
        runtime: who runs the stages (zsclip.engines.Runtime: the local engine, or Ray).
        top_k: classes listed per image (default 3, or fewer classes).
        threshold: label "unknown" when the top probability is below it.
        on_batch: called with (classified, skipped) after every batch.
        recheck: with an int8 image tower, the labels it could have changed are settled by the fp32 tower
            (zsclip.classify.recheck); pass one to read its count afterwards.

    Returns:
        An iterator of Prediction (path, label, prob, top_k, abstained) and Skipped (path, reason) records, in
        walk order.

    Examples:
        >>> model = zsclip.load_model("shapes")
        >>> clf = zsclip.build_classifier(model, ["circle", "square"])
        >>> for record in zsclip.classify(model, clf, "photos/", batch_size=16):
        ...     print(record.to_dict())
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    k = check_options(classifier, top_k, threshold)
    read, runtime = reading(read, runtime, read_fields, "classify")
    sources = paths if _expanded(paths) else expand_sources(paths)
    recheck = recheck or Recheck(model, classifier, read)
    for batch in embed_stream(model, sources, read, runtime):
        preds = []
        if batch.features is not None:
            features = recheck(batch.paths, batch.features)
            preds = predict(batch.paths, probabilities(features, classifier), classifier, k, threshold)
        yield from _in_walk_order(preds, batch.skipped, batch.skipped_at)
        if on_batch:
            on_batch(len(batch.paths), len(batch.skipped))


def _in_walk_order(
    preds: list[Prediction], skipped: list[tuple[str, str]], skipped_at: list[int]
) -> Iterator[Prediction | Skipped]:
    """A batch's records in walk order: each skip record goes before the prediction it preceded in the walk
    (`skipped_at[i]` predictions come before skip i), so --strict keeps every image before the bad file."""
    at = list(skipped_at) + [0] * (len(skipped) - len(skipped_at))  # a loader that does not say: first
    n = 0
    for (path, reason), before in zip(skipped, at, strict=True):
        while n < min(before, len(preds)):
            yield preds[n]
            n += 1
        yield Skipped(path, reason)
    yield from preds[n:]


def _expanded(paths) -> bool:
    """Sources already checked by zsclip.pipeline.sources.expand_sources: (path, explicit) pairs."""
    return isinstance(paths, list) and bool(paths) and all(isinstance(p, tuple) for p in paths)
