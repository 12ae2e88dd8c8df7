"""Prompts -> text embeddings (cached) -> the zero-shot classifier matrix.

Ensembling follows CLIP: L2-normalise every prompt embedding, average them per class, L2-normalise again.
Only prompts missing from the cache are encoded, so adding a class or a template costs just the new prompts.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from zsclip.core.errors import UsageError
from zsclip.models import ClipModel, vector_key
from zsclip.models.encoder import encoder_of
from zsclip.store.cache import Cache
from zsclip.zeroshot.prompts import DEFAULT_TEMPLATES, TemplateSet, check_classnames, load_templates, parse_classes
from zsclip.zeroshot.similarity import ensemble

TEXT_BATCH = 256


@dataclass
class Classifier:
    """Class names and their unit-norm text embeddings (rows), ready to score image embeddings."""

    classnames: list[str]
    weights: np.ndarray  # [num_classes, dim], float32, rows L2-normalised
    templates: TemplateSet
    logit_scale: float
    fingerprint: str
    encoded_prompts: int = 0  # prompts that missed the cache and went through the text encoder
    notes: list[str] = field(default_factory=list)  # for stderr: repeated names and how they are labelled
    head: Any = None  # a fitted few-shot head (zsclip.fewshot) that gives the logits instead of the text weights

    def __len__(self) -> int:
        return len(self.classnames)

    @property
    def labels(self) -> list[str]:
        """The class names as outputs show them, one per class: a repeated name is numbered from its second
        occurrence on ('missile', 'missile (2)'), so two classes never share a label."""
        return unique_labels(self.classnames)


def unique_labels(names: Sequence[str]) -> list[str]:
    """Names made unique by numbering repeats; the prompts still use the name itself."""
    taken = set(names)
    seen: Counter[str] = Counter()
    out = []
    for name in names:
        seen[name] += 1
        label = name
        if seen[name] > 1:
            k = seen[name]
            while (label := f"{name} ({k})") in taken:
                k += 1
            taken.add(label)
        out.append(label)
    return out


def resolve_templates(templates: str | Sequence[str] | TemplateSet, model: ClipModel) -> TemplateSet:
    """`default` is the model's recommended set when its metadata names one, else imagenet80."""
    return load_templates(templates, default=model.recommended_templates or DEFAULT_TEMPLATES)


def build_classifier(
    model: ClipModel,
    classnames: Sequence[str],
    templates: str | Sequence[str] | TemplateSet = "default",
    *,
    cache: Cache | None = None,
    use_cache: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> Classifier:
    """Build (or fetch from the cache) the zero-shot classifier for these class names and templates.

    Each class name goes into every template; each prompt embedding is L2-normalised, averaged per class and
    normalised again (CLIP's prompt ensemble). Only prompts missing from the cache are encoded.

    Args:
        model: a loaded model (zsclip.load_model).
        classnames: a list, or one string of comma-separated names as `--classes` takes it; both get the CLI's
            checks (no empty name, at least 2 classes; a typed string also refuses a repeat), and names that
            would always tie are refused.
        templates: a template set name (`zsclip prompts list`), a file of templates, a list such as
            ["a photo of a {}."], or "default" (the model's own set, else imagenet80).
        cache: the cache of text vectors (default: zsclip.cache_dir()); use_cache: False encodes every prompt.
        progress: called with (encoded, total) while prompts are encoded.

    Returns:
        A Classifier: `weights` [classes, dim] unit rows, `labels`, `templates`, the model's `logit_scale`.

    Examples:
        >>> model = zsclip.load_model("shapes")
        >>> clf = zsclip.build_classifier(model, ["red circle", "blue square"], templates="shapes")
        >>> clf.weights.shape
    """
    template_set = resolve_templates(templates, model)
    if isinstance(classnames, str):
        classnames = parse_classes(classnames)
    classnames = check_classnames(classnames, "class names")
    weights, encoded = text_embeddings(
        model, classnames, template_set, cache=cache, use_cache=use_cache, progress=progress
    )
    notes = check_distinct(model, classnames, weights, template_set)
    return Classifier(classnames, weights, template_set, model.logit_scale, model.fingerprint, encoded, notes)


def text_embeddings(
    model: ClipModel,
    texts: Sequence[str],
    templates: str | Sequence[str] | TemplateSet = ("{}",),
    *,
    cache: Cache | None = None,
    use_cache: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, int]:
    """Unit-norm embeddings [len(texts), dim] of texts put into templates and ensembled (normalise, mean,
    normalise), cached per prompt; with how many prompts had to be encoded. No checks on the texts: retrieval
    captions and video narrations may repeat or tie, class lists may not (build_classifier)."""
    template_set = resolve_templates(templates, model)
    prompts_per_text = [template_set.expand(t) for t in texts]
    unique = list(dict.fromkeys(p for ps in prompts_per_text for p in ps))
    cache = (cache or Cache()) if use_cache else None
    found = cache.get_text(model.fingerprint, vector_key(model, "text"), unique) if cache else {}
    missing = [p for p in unique if p not in found]
    if missing:
        new = encode_prompts(model, missing, progress=progress)
        found.update(zip(missing, new, strict=True))
        if cache:
            cache.put_text(model.fingerprint, vector_key(model, "text"), zip(missing, new, strict=True))
    return ensemble([np.stack([found[p] for p in ps]) for ps in prompts_per_text]), len(missing)


_SAME = 1 - 1e-5  # cosine above which two classifier rows are the same vector up to float rounding


def check_distinct(model: ClipModel, classnames: list[str], weights: np.ndarray, templates: TemplateSet) -> list[str]:
    """Notes on repeated names; a UsageError when different names get the same text embedding, so they would
    always tie (a silent coin flip, or 1/N for every class): names differing only in letter case for a tokenizer
    that ignores it, or templates so long that the text context cuts the class name off."""
    notes = []
    repeated = [n for n, k in Counter(classnames).items() if k > 1]
    if repeated:
        labels = unique_labels(classnames)
        shown = [
            f"{n!r} as {', '.join(repr(lab) for lab, c in zip(labels, classnames, strict=True) if c == n)}"
            for n in repeated[:3]
        ]
        notes.append(f"repeated class names are scored apart by position and labelled {'; '.join(shown)}")
    first = {}
    for i, n in enumerate(classnames):
        first.setdefault(n, i)
    rows = list(first.values())
    w = weights[rows]
    for start in range(0, len(rows), 1024):
        sims = w[start : start + 1024] @ w.T
        for a, b in np.argwhere(sims > _SAME).tolist():
            a += start
            if a < b:
                raise UsageError(_tie_message(model, classnames[rows[a]], classnames[rows[b]], len(rows), w, templates))
    return notes


def _tie_message(model: ClipModel, a: str, b: str, n: int, w: np.ndarray, templates: TemplateSet) -> str:
    every = bool(((w @ w[0]) > _SAME).all())
    if every:
        head = f"all {n} classes get the same text embedding with template set {templates.name!r}"
    else:
        head = f"classes {a!r} and {b!r} get the same text embedding, so they would always tie"
    names_differ = not np.array_equal(model.tokenizer([a]), model.tokenizer([b]))
    if names_differ:
        context = getattr(model.tokenizer, "context_length", None) or model.tokenizer([a]).shape[-1]
        why = (
            f"the prompts are longer than the model's text context ({context} tokens), which cuts the class name "
            "off; use shorter templates (or a template with {} near its start)"
        )
    elif a.casefold() == b.casefold():
        why = "the names differ only in letter case, which this model's tokenizer ignores; rename one"
    else:
        why = "this model's tokenizer reads the names the same; rename one"
    return f"{head}: {why}"


def encode_prompts(
    model: ClipModel, prompts: Sequence[str], *, progress: Callable[[int, int], None] | None = None
) -> list[np.ndarray]:
    """Raw (unnormalised) text embeddings, float32, one per prompt, in order.

    CLIP text towers see 77 positions although prompts are short; sorted by length and batched, each batch runs
    only to its longest prompt (several times faster, same vectors to ~1e-6). Other towers run `encode_text`.
    With an exported text tower (zsclip.backends) this needs no torch.
    """
    if progress:
        progress(0, len(prompts))
    tokens = model.tokenizer(list(prompts))
    encoder = encoder_of(model)
    positions = encoder.text_positions(tokens)
    order = np.argsort(positions, kind="stable") if positions is not None else np.arange(len(prompts))
    out: list[np.ndarray | None] = [None] * len(prompts)
    for start in range(0, len(prompts), TEXT_BATCH):
        idx = order[start : start + TEXT_BATCH]
        at = None if positions is None else positions[idx]
        features = encoder.encode_text(tokens[idx], at)
        for i, vector in zip(idx.tolist(), features, strict=True):
            out[i] = vector
        if progress:
            progress(min(start + TEXT_BATCH, len(prompts)), len(prompts))
    return out
