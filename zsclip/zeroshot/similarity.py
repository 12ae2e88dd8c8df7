"""CLIP's scoring in NumPy: unit vectors, the prompt ensemble, logits = logit_scale * cosine, softmax, top k.

Vectors leave the encoders as float32 NumPy arrays whatever computed them (torch, ONNX Runtime), so scoring needs
no torch: a classify run whose towers are exported never imports it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

EPS = 1e-12  # torch.nn.functional.normalize's floor on the norm


def unit(x: np.ndarray) -> np.ndarray:
    """Rows L2-normalised (float32), as torch.nn.functional.normalize(x, dim=-1)."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), EPS)


def ensemble(per_class: Sequence[np.ndarray]) -> np.ndarray:
    """The CLIP prompt ensemble: normalise each prompt embedding, average per class, normalise again.
    `per_class[i]` is [prompts of class i, dim]; returns [classes, dim]."""
    if len({len(v) for v in per_class}) == 1:  # the usual case: every class has every template, one array op
        return unit(unit(np.asarray(per_class, dtype=np.float32)).mean(axis=1))
    return unit(np.stack([unit(v).mean(axis=0) for v in per_class]))


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


def probabilities(features: np.ndarray, weights: np.ndarray, logit_scale: float) -> np.ndarray:
    """Softmax over classes of logit_scale * cosine similarity; `features` and `weights` rows are unit-norm."""
    return softmax(np.float32(logit_scale) * (np.asarray(features, dtype=np.float32) @ weights.T))


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(values, indices) of the k largest per row, largest first; ties keep the lower index first."""
    indices = np.argsort(-scores, axis=-1, kind="stable")[..., : min(k, scores.shape[-1])]
    return np.take_along_axis(scores, indices, -1), indices
