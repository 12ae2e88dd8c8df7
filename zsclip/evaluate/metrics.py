"""Predictions + true labels -> the numbers: scikit-learn's definitions, CLIP_benchmark's key names.

acc1/acc5 are the fraction of images whose true class is among the top 1/5; mean_per_class_recall is
scikit-learn's balanced accuracy (the mean of per-class recall over the classes present), as in CLIP_benchmark.
"""

from __future__ import annotations

import warnings

import numpy as np

# scikit-learn is imported inside each function: it costs a second, and zsclip.evaluate (which `import zsclip`
# loads for zsclip.evaluate()) imports this module.


def summary(y_true: np.ndarray, topk: np.ndarray) -> dict:
    """acc1, acc5 (when there are >= 5 ranked classes) and mean_per_class_recall; topk is [N, k] class indices."""
    from sklearn.metrics import balanced_accuracy_score

    y_true = np.asarray(y_true)
    hits = topk == y_true[:, None]
    out = {"acc1": float(hits[:, 0].mean()) if len(y_true) else 0.0}
    if topk.shape[1] >= 5:
        out["acc5"] = float(hits[:, :5].any(axis=1).mean())
    with warnings.catch_warnings():
        # "y_pred contains classes not in y_true" is expected on a subset: recall is over the classes present
        warnings.simplefilter("ignore", UserWarning)
        recall = float(balanced_accuracy_score(y_true, topk[:, 0])) if len(y_true) else 0.0
    out["mean_per_class_recall"] = recall
    return out


def per_class(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> dict[str, np.ndarray]:
    from sklearn.metrics import precision_recall_fscore_support

    labels = np.arange(num_classes)
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support}


def confusion(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows: true class, columns: predicted class."""
    from sklearn.metrics import confusion_matrix

    return confusion_matrix(y_true, y_pred, labels=np.arange(num_classes))


def most_confused(matrix: np.ndarray, n: int = 20) -> list[tuple[int, int, int]]:
    """(true, predicted, count) for the largest off-diagonal cells, largest first."""
    off = matrix.copy()
    np.fill_diagonal(off, 0)
    flat = np.argsort(off, axis=None)[::-1][:n]
    pairs = [(int(i // off.shape[1]), int(i % off.shape[1])) for i in flat]
    return [(t, p, int(off[t, p])) for t, p in pairs if off[t, p] > 0]
