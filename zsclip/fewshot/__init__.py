"""Few-shot classifiers: K labelled images per class of a data set, drawn with a seed, fitted as a head over the
frozen image features (zsclip.fewshot.heads), scored on the rest, saved as one file (zsclip.fewshot.files) that
classify, eval, search and serve take in place of class names.

Features come through the image store, so the images of a data set are encoded once for every K, seed and
method; with an int8 image tower they are computed by the fp32 tower (a head is fitted to fp32 features).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from zsclip.classify.predict import probabilities
from zsclip.classify.recheck import fp32_of
from zsclip.core.errors import UsageError
from zsclip.core.paths import resolved
from zsclip.core.wording import plural
from zsclip.engines import ReadOptions, Runtime
from zsclip.evaluate.run import embed_dataset
from zsclip.fewshot.files import check_model, load, save
from zsclip.fewshot.heads import METHODS, Head, fit
from zsclip.store.identity import FileIdentity, stat_of, unchanged
from zsclip.zeroshot.classifier import Classifier, text_embeddings
from zsclip.zeroshot.prompts import TemplateSet

if TYPE_CHECKING:
    from zsclip.datasets import EvalDataset
    from zsclip.evaluate.run import Embedded
    from zsclip.models import ClipModel
    from zsclip.zeroshot.classifier import Classifier

__all__ = ["METHODS", "FitResult", "draw_shots", "fit_embedded", "load_classifier", "save", "shot_curve"]


@dataclass
class FitResult:
    head: Head
    classifier: Classifier
    shots: int
    seed: int
    train: np.ndarray  # indices into the Embedded rows used as shots
    held_out: np.ndarray
    acc1: float | None  # on the held-out images (None when none are left)
    zero_shot_acc1: float | None
    seconds: float  # fitting alone (features already there)
    short: dict[str, int] = field(default_factory=dict)  # class -> images it had, where fewer than K
    shot_paths: list[str] = field(default_factory=list)

    def meta(self, model: ClipModel, dataset: str) -> dict:
        return {
            "model": portable_spec(model.spec),
            "fingerprint": model.fingerprint,
            "classnames": self.classifier.classnames,
            "templates": list(self.classifier.templates.templates),
            "template_set": self.classifier.templates.name,
            "logit_scale": self.classifier.logit_scale,
            "dataset": dataset,
            "shots": self.shots,
            "seed": self.seed,
            "held_out": len(self.held_out),
            "held_out_acc1": self.acc1,
            "zero_shot_acc1": self.zero_shot_acc1,
            "short_classes": self.short,
            # which images were shots, as they were (zsclip.store.identity), so eval --classifier can say how many of
            # them it scores
            "shot_files": [shot_identity(p) for p in self.shot_paths],
        }


def draw_shots(labels: np.ndarray, k: int, seed: int, classes: int) -> tuple[np.ndarray, np.ndarray, dict[int, int]]:
    """(shot indices, held-out indices, {class: images it has} for classes with fewer than k): k images per class
    drawn with `seed`; a short class gives all but one of its images (so it is scored too), or its one image."""
    if k < 1:
        raise UsageError(f"--shots {k}: must be at least 1")
    rng = np.random.default_rng(seed)
    train, short = [], {}
    for c in range(classes):
        rows = np.flatnonzero(labels == c)
        if len(rows) <= k:
            short[c] = len(rows)
        take = min(k, max(len(rows) - 1, 1)) if len(rows) <= k else k
        train += rng.permutation(rows)[:take].tolist() if len(rows) else []
    train = np.sort(np.asarray(train, dtype=np.int64))
    held = np.setdiff1d(np.arange(len(labels)), train)
    return train, held, short


def fit_embedded(
    embedded: Embedded, classifier: Classifier, shots: int, method: str, seed: int = 0, strict: bool = False
) -> FitResult:
    """Fit `method` on `shots` images per class of the embedded data set; score it and zero-shot on the rest."""

    names = classifier.classnames
    if len(names) < 2:
        raise UsageError(f"{embedded.dataset.name}: one class ({names[0]!r}); a classifier needs at least two")
    train, held, short = draw_shots(embedded.labels, shots, seed, len(names))
    missing = [names[c] for c, n in short.items() if n == 0]
    if missing:
        raise UsageError(f"{embedded.dataset.name}: no readable image of class {missing[0]!r} to learn it from")
    if strict and short:
        c, n = next(iter(short.items()))
        raise UsageError(
            f"--shots {shots}: class {names[c]!r} has {n} images, not more than {shots} (one must stay out to be "
            f"scored; {plural(len(short), 'class', 'classes')} like it); drop --strict-shots to use what there is"
        )
    start = time.perf_counter()
    head = fit(
        method, embedded.features[train], embedded.labels[train], classifier.weights, classifier.logit_scale, seed
    )
    head.arrays.setdefault("text", classifier.weights.astype(np.float32))
    seconds = time.perf_counter() - start
    fitted = _with_head(classifier, head)
    acc = zero = None
    if len(held):
        truth = embedded.labels[held]
        acc = float((probabilities(embedded.features[held], fitted).argmax(-1) == truth).mean())
        zero = float((probabilities(embedded.features[held], classifier).argmax(-1) == truth).mean())
    short_names = {names[c]: n for c, n in short.items()}
    shot_paths = [embedded.paths[i] for i in train]
    return FitResult(head, fitted, shots, seed, train, held, acc, zero, seconds, short_names, shot_paths)


def shot_identity(path: str) -> dict:
    """A shot as it was when fitted: a file's FileIdentity (zsclip.store.identity) under its resolved path; else a shard
    member's name (or that of a file gone since it was read: no file can match it later)."""

    found = FileIdentity.of(path)
    return {"member": path} if found is None else {**dataclasses.asdict(found), "path": resolved(path)}


def shots_among(meta: dict, paths) -> int:
    """How many of `paths` are shots of the classifier whose metadata is `meta`: the same file (by resolved path,
    from any working directory) still holding the content it had when fitted, or the same shard member."""

    files, members = {}, set()
    for shot in meta.get("shot_files") or ():
        if "member" in shot:
            members.add(shot["member"])
        else:
            files[resolved(shot["path"])] = shot
    count = 0
    for path in paths if files or members else ():
        shot = files.get(resolved(path))
        if shot is not None:
            count += unchanged(FileIdentity(**shot), path)
        elif path in members:
            count += stat_of(path) is None  # a member, not a file that has since appeared at that name
    return count


def portable_spec(spec: str) -> str:
    """A model spec that names the same weights from any working directory: a local model folder or weights file
    (alone or after ARCH:) made absolute. Names (shapes, ViT-B-32:openai, hf-hub:org/repo) stay as they are."""
    arch, sep, rest = spec.partition(":")
    prefix, local = (f"{arch}:", rest) if sep and arch != "hf-hub" else ("", spec)
    if (sep and arch == "hf-hub") or (not local.startswith(("/", ".", "~")) and "/" not in local):
        return spec

    path = Path(local).expanduser()
    return f"{prefix}{resolved(str(path))}" if path.exists() else spec


def _with_head(classifier: Classifier, head: Head) -> Classifier:
    return dataclasses.replace(classifier, head=head)


def load_classifier(path, model: ClipModel) -> Classifier:
    """A classifier file as a Classifier for `model` (refused, with one line, if made for other weights)."""

    head, meta = load(path)
    check_model(meta, model.fingerprint, model.spec, path)
    text = head.arrays["text"]
    width = text_embeddings(model, ["a"])[0].shape[-1]  # the model's embedding width (one prompt, cached)
    if text.shape[1] != width:
        raise UsageError(f"--classifier {path}: its arrays are {text.shape[1]} wide, the model's vectors {width}")
    name = meta.get("template_set") or "fitted"
    templates = TemplateSet(name, f"the templates {path} was fitted with", tuple(meta.get("templates") or ("{}",)))
    notes = [f"--classifier {path}: {meta['method']}, {meta['shots']} shots per class of {meta.get('dataset')}"]
    names = list(meta["classnames"])
    return Classifier(names, text, templates, float(meta["logit_scale"]), model.fingerprint, notes=notes, head=head)


def shot_curve(
    embedded: Embedded,
    classifier: Classifier,
    shots: Sequence[int],
    method: str,
    seeds: int = 3,
    on_fit: Callable[[int, int], None] | None = None,
) -> list[dict]:
    """The CLIP paper's Figure 6 for one data set: zero-shot, then each K's held-out top-1 over `seeds` draws
    (mean and standard deviation); zero-shot is scored on the held-out images of the smallest K's draws."""
    rows = []
    zero = []
    for k in shots:
        accs = []
        for seed in range(seeds):
            result = fit_embedded(embedded, classifier, k, method, seed)
            accs.append(result.acc1)
            if k == shots[0]:  # zero-shot on the held-out images of the first K's draws
                zero.append(result.zero_shot_acc1)
            if on_fit:
                on_fit(k, seed)
        rows.append(_point(k, method, accs))
    return [_point(0, "zero-shot", zero), *rows]


def _point(shots: int, method: str, accs: list[float | None]) -> dict:
    accs = [a for a in accs if a is not None]
    mean, std = (float(np.mean(accs)), float(np.std(accs))) if accs else (None, None)
    return {"shots": shots, "method": method, "acc1": mean, "std": std, "seeds": len(accs)}


def embed_for_fit(
    model: ClipModel, dataset: EvalDataset, read: ReadOptions | None = None, runtime: Runtime | None = None
) -> Embedded:
    """The data set's features by the fp32 tower (an int8 tower's features are not what a head should fit)."""
    return embed_dataset(fp32_of(model), dataset, read, runtime)
