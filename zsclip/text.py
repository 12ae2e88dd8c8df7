"""Prompts -> text embeddings (cached) -> the zero-shot classifier matrix.

Ensembling follows CLIP: L2-normalise every prompt embedding, average them per class, L2-normalise again.
Only prompts missing from the cache are encoded, so adding a class or a template costs just the new prompts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .cache import Cache
from .models import ClipModel
from .prompts import DEFAULT_TEMPLATES, TemplateSet, load_templates

TEXT_BATCH = 256


@dataclass
class Classifier:
    """Class names and their unit-norm text embeddings (rows), ready to score image embeddings."""

    classnames: list[str]
    weights: torch.Tensor  # [num_classes, dim], float32, rows L2-normalised
    templates: TemplateSet
    logit_scale: float
    fingerprint: str
    encoded_prompts: int = 0  # prompts that missed the cache and went through the text encoder

    def __len__(self) -> int:
        return len(self.classnames)


def resolve_templates(templates: str | Sequence[str] | TemplateSet, model: ClipModel) -> TemplateSet:
    """`default` is the model's recommended set when its metadata names one, else imagenet80."""
    if templates == "default":
        templates = model.recommended_templates or DEFAULT_TEMPLATES
    return load_templates(templates)


def build_classifier(
    model: ClipModel,
    classnames: Sequence[str],
    templates: str | Sequence[str] | TemplateSet = "default",
    *,
    cache: Cache | None = None,
    use_cache: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> Classifier:
    """Build (or fetch from the cache) the classifier for these class names and templates."""
    template_set = resolve_templates(templates, model)
    classnames = list(classnames)
    prompts_per_class = [template_set.expand(c) for c in classnames]
    unique = list(dict.fromkeys(p for ps in prompts_per_class for p in ps))
    cache = (cache or Cache()) if use_cache else None
    found = cache.get_text(model.fingerprint, model.precision, unique) if cache else {}
    missing = [p for p in unique if p not in found]
    if missing:
        new = encode_prompts(model, missing, progress=progress)
        found.update(zip(missing, new, strict=True))
        if cache:
            cache.put_text(model.fingerprint, model.precision, zip(missing, new, strict=True))
    weights = ensemble([np.stack([found[p] for p in ps]) for ps in prompts_per_class])
    return Classifier(classnames, weights, template_set, model.logit_scale, model.fingerprint, len(missing))


def ensemble(per_class: Sequence[np.ndarray]) -> torch.Tensor:
    """normalise each prompt embedding -> mean per class -> normalise: the CLIP prompt ensemble."""
    rows = []
    for vectors in per_class:
        v = torch.from_numpy(np.asarray(vectors, dtype=np.float32))
        rows.append(torch.nn.functional.normalize(v, dim=-1).mean(dim=0))
    return torch.nn.functional.normalize(torch.stack(rows), dim=-1)


@torch.inference_mode()
def encode_prompts(
    model: ClipModel, prompts: Sequence[str], *, progress: Callable[[int, int], None] | None = None
) -> list[np.ndarray]:
    """Raw (unnormalised) text embeddings, float32, one per prompt, in order."""
    out: list[np.ndarray] = []
    if progress:
        progress(0, len(prompts))
    for start in range(0, len(prompts), TEXT_BATCH):
        batch = list(prompts[start : start + TEXT_BATCH])
        tokens = model.tokenizer(batch).to(model.device)
        with model.autocast():
            features = model.model.encode_text(tokens)
        out.extend(features.float().cpu().numpy())
        if progress:
            progress(len(out), len(prompts))
    return out
