"""Score a model on a labelled data set, and compare template sets on it with the images encoded once."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from zsclip.classify.predict import probabilities
from zsclip.classify.recheck import Recheck
from zsclip.core.errors import UsageError, ZsclipError
from zsclip.datasets import EvalDataset, load_dataset
from zsclip.engines import ReadOptions, Runtime, embed_stream, reading
from zsclip.evaluate import metrics
from zsclip.evaluate.recall import evaluate_retrieval
from zsclip.models import ClipModel
from zsclip.zeroshot.classifier import Classifier, build_classifier
from zsclip.zeroshot.prompts import list_template_sets, load_templates
from zsclip.zeroshot.similarity import ensemble, top_k

if TYPE_CHECKING:
    from zsclip.evaluate.recall import RetrievalResult


@dataclass
class Embedded:
    """A data set's image embeddings, with the files that could not be read."""

    dataset: EvalDataset
    paths: list[str]
    labels: np.ndarray  # [N] true class indices
    features: np.ndarray  # [N, dim] unit-norm float32
    skipped: list[tuple[str, str]] = field(default_factory=list)
    reused: int = 0  # embeddings taken from the image store instead of encoded


@dataclass
class EvalResult:
    dataset: EvalDataset
    classifier: Classifier
    paths: list[str]
    labels: np.ndarray
    topk: np.ndarray  # [N, k] predicted class indices, best first
    topk_prob: np.ndarray  # [N, k]
    skipped: list[tuple[str, str]]
    metrics: dict


def embed_dataset(
    model: ClipModel,
    dataset: EvalDataset,
    read: ReadOptions | None = None,
    runtime: Runtime | None = None,
    *,
    on_batch: Callable[[int, int], None] | None = None,
) -> Embedded:
    """Embed every image of the data set, read as `read` says, run by `runtime`. With the store, a run that was
    killed resumes: the images it finished are not encoded again."""
    truth = {p: label for p, label in dataset.items}
    sources = [(p, True) for p, _ in dataset.items]
    paths, feats, skipped = [], [], []
    reused = 0
    for batch in embed_stream(model, sources, read, runtime):
        skipped += batch.skipped
        reused += batch.reused
        if batch.features is not None:
            paths += batch.paths
            feats.append(batch.features)
        if on_batch:
            on_batch(len(batch.paths), len(batch.skipped))
    if not paths:
        raise ZsclipError(f"{dataset.name}: no image could be read ({len(skipped)} skipped)")
    labels = np.array([truth[p] for p in paths])
    return Embedded(dataset, paths, labels, np.concatenate(feats), skipped, reused)


def score(embedded: Embedded, classifier: Classifier, k: int = 5, recheck: Recheck | None = None) -> EvalResult:
    """Top-k predictions and metrics; with an int8 image tower and `recheck` (zsclip.classify.recheck), the labels near
    a
    tie are settled by the fp32 tower first."""
    features = recheck(embedded.paths, embedded.features) if recheck else embedded.features
    probs = probabilities(features, classifier)
    values, topk = top_k(probs, k)
    summary = metrics.summary(embedded.labels, topk)
    return EvalResult(
        embedded.dataset, classifier, embedded.paths, embedded.labels, topk, values, embedded.skipped, summary
    )


def resolve_dataset_templates(templates: str, dataset: EvalDataset, model: ClipModel) -> str:
    """`default` in eval: the data set's own set, else the model's recommended set, else imagenet80."""
    if templates != "default":
        return templates
    return dataset.templates or model.recommended_templates or "imagenet80"


def evaluate(
    model: ClipModel,
    dataset: str | EvalDataset,
    templates: str | Sequence[str] = "default",
    *,
    root: str | None = None,
    classnames: str | None = None,
    limit: int | None = None,
    on_batch: Callable[[int, int], None] | None = None,
    task: str = "classification",
    recall_k: Sequence[int] = (1, 5, 10),
    read: ReadOptions | None = None,
    runtime: Runtime | None = None,
    **read_fields,
) -> EvalResult | RetrievalResult:
    """Zero-shot accuracy of `model` on a data set, with CLIP_benchmark's metric names.

    Args:
        model: a loaded model (zsclip.load_model).
        dataset: a name (`cifar10`, `imagenet-v2`, `wds/...`), a folder of class folders, `csv:FILE`, or an
            EvalDataset (zsclip.load_dataset).
        templates: a template set name, a file of templates, a list of templates, or "default" (the data set's
            own set, else the model's, else imagenet80).
        root: an existing copy of a named data set (no download); classnames: a class-names file for a folder.
        limit: score the first N images only.
        on_batch: called with (embedded, skipped) after every batch.
        task: "classification", or "retrieval" (recall@K both ways on a captions CSV: zsclip.evaluate.recall;
            `templates`, `root`, `classnames` do not apply there).
        recall_k: the K of recall@K for retrieval.
        read: how images are read (zsclip.engines.ReadOptions); its fields may also be given by name
            (`batch_size=64`, `workers=2`, `store=False`, `exact=True`).
        runtime: who runs the stages (zsclip.engines.Runtime("ray", RayOptions(...)) for a Ray cluster).

    Returns:
        An EvalResult (metrics: acc1, acc5, mean_per_class_recall, ...; per-image top-k; skipped files), or a
        RetrievalResult for task="retrieval".

    Examples:
        >>> model = zsclip.load_model("shapes")
        >>> result = zsclip.evaluate(model, "shapes-test", templates="default", workers=0)
        >>> result.metrics["acc1"]
    """
    read, runtime = reading(read, runtime, read_fields, "evaluate")
    if task == "retrieval":
        return evaluate_retrieval(model, dataset, recall_k, read, runtime, on_batch=on_batch)
    if task != "classification":
        raise UsageError(f"--task {task}: use classification or retrieval")
    if isinstance(dataset, str):
        dataset = load_dataset(dataset, root=root, classnames=classnames)
    dataset = dataset.limit(limit)
    if isinstance(templates, str):
        templates = resolve_dataset_templates(templates, dataset, model)
    classifier = build_classifier(model, dataset.classnames, templates)
    embedded = embed_dataset(model, dataset, read, runtime, on_batch=on_batch)
    return score(embedded, classifier, recheck=Recheck(model, classifier, read))


# -- comparing template sets -------------------------------------------------------------------------------
@dataclass
class Comparison:
    rows: list[dict]  # one per template set: name, templates, acc1, acc5, mean_per_class_recall; best first
    per_template: list[dict] = field(default_factory=list)  # one per template: template, acc1
    greedy: list[dict] = field(default_factory=list)  # the greedy subset, step by step: added template, acc1


def compare_templates(
    model: ClipModel,
    embedded: Embedded,
    sets: Sequence[str] | None = None,
    per_template: bool = False,
    read: ReadOptions | None = None,
) -> Comparison:
    """Score every template set on the same image embeddings (encoded once); text comes from the cache.

    Args:
        model: a loaded model (zsclip.load_model).
        embedded: a data set's image embeddings (zsclip.evaluate.run.embed_dataset).
        sets: template set names (default: every set in prompts/).
        per_template: also score each template alone, and the greedy subset built from them.
        read: the reading options of an int8 label re-check (zsclip.classify.recheck).

    Returns:
        A Comparison: one row per set (acc1, acc5, mean per-class recall), best first; per-template rows and the
        greedy subset with `per_template`.

    Examples:
        >>> model = zsclip.load_model("shapes")
        >>> data = zsclip.load_dataset("path/to/folder")
        >>> rows = zsclip.compare_templates(model, embed_dataset(model, data), ["shapes", "photo"]).rows
    """
    names = list(sets) if sets else [s.name for s in list_template_sets()]
    classnames = embedded.dataset.classnames
    default = resolve_dataset_templates("default", embedded.dataset, model)  # what 'default' is, as in eval
    rows = []
    for name in names:
        template_set = load_templates(name, default=default)
        classifier = build_classifier(model, classnames, template_set)
        result = score(embedded, classifier, recheck=Recheck(model, classifier, read))
        shown = f"default ({template_set.name})" if name == "default" else template_set.name
        rows.append({"set": shown, "templates": len(template_set.templates), **result.metrics})
    rows.sort(key=lambda r: (-r["acc1"], -r.get("acc5", 0), r["set"]))
    comparison = Comparison(rows)
    if per_template:
        unique = list(dict.fromkeys(t for name in names for t in load_templates(name, default=default).templates))
        single = {t: build_classifier(model, classnames, [t]).weights for t in unique}
        for t in unique:
            acc1 = _acc1(embedded, single[t])
            comparison.per_template.append({"template": t, "acc1": acc1})
        comparison.per_template.sort(key=lambda r: -r["acc1"])
        comparison.greedy = greedy_subset(embedded, single)
    return comparison


def _acc1(embedded: Embedded, weights: np.ndarray) -> float:
    predicted = (embedded.features @ weights.T).argmax(-1)
    return float((predicted == embedded.labels).mean())


def greedy_subset(embedded: Embedded, single: dict[str, np.ndarray]) -> list[dict]:
    """Forward selection: add the template that most improves the ensemble's acc1, stop when none does.

    A single-template classifier row is that prompt's unit-norm embedding, so the ensemble of a subset is the
    normalised sum of its rows, exactly the CLIP prompt ensemble.
    """
    chosen: list[str] = []
    best = -1.0
    steps = []
    while len(chosen) < len(single):
        candidates = []
        for t in single:
            if t in chosen:
                continue
            weights = ensemble(np.stack([single[c] for c in [*chosen, t]], axis=1))
            candidates.append((_acc1(embedded, weights), t))
        acc, t = max(candidates, key=lambda c: (c[0], -len(c[1])))
        if acc <= best:
            break
        best = acc
        chosen.append(t)
        steps.append({"step": len(chosen), "added": t, "acc1": acc})
    return steps


def summary(result: EvalResult, model: ClipModel) -> dict:
    """What metrics.json holds: the model (and the backend and precision that computed it), the data set, its
    templates and counts, and the metrics."""
    return {
        **model.computed_by(),
        "dataset": result.dataset.name,
        "dataset_source": result.dataset.source,
        "templates": result.classifier.templates.name,
        "num_templates": len(result.classifier.templates.templates),
        "num_classes": len(result.classifier),
        "images": len(result.paths),
        "skipped": len(result.skipped),
        "notes": result.dataset.notes,
        "metrics": result.metrics,
        **_fitted(result.classifier),
    }


def _fitted(classifier) -> dict:
    """A few-shot classifier's own account (method, shots, seed, what it was fitted on), where it is one."""
    head = getattr(classifier, "head", None)
    if head is None or not head.meta:
        return {}
    keys = ("method", "shots", "seed", "dataset", "held_out_acc1", "sha256")
    return {"classifier": {key: head.meta.get(key) for key in keys}}
