"""Few-shot classifier heads over frozen, unit-norm CLIP image features, and how each is fitted.

- linear-probe: multinomial logistic regression, logits = f W^T + b, fitted by L-BFGS on the mean cross-entropy
  plus (lam / 2) |W - W0|^2, where the prior W0 is zero (plain L2, what sklearn's LogisticRegression minimises with
  C = 1 / (lam n)) or the zero-shot classifier (logit_scale x the text weights): with 1-2 shots a probe pulled
  toward the zero-shot weights keeps what the text knew. lam and the prior are chosen by cross-validation on the
  shots when every class has at least 2 (the CLIP paper and CLIP_benchmark sweep the regularisation on a
  validation split); with 1 shot the zero-shot prior and DEFAULT_LAM.
- tip-adapter (Zhang et al., 2021), training-free: logits = s f T^T + alpha exp(-beta (1 - f K^T)) V, with the
  shots' features as keys K and their one-hot labels as values V; alpha, beta by cross-validation.
- prototype: the class means of the shots' features blended with the text weights, logits = s f (a T + (1 - a)
  P)^T with P the unit class means; a by cross-validation.

A head is arrays and a few numbers: `logits(features)`; `linear()` gives (W, b) where the head is linear (the int8
label check needs that), else None.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from scipy.optimize import OptimizeResult

METHODS = ("linear-probe", "tip-adapter", "prototype")
# From the strongest regularisation down: each fit starts from the previous one's solution (a path), so the sweep
# costs little more than its last fit.
LAMS = [10.0**e for e in range(1, -9, -1)]
DEFAULT_LAM = 0.01
# The L-BFGS budget of each fit. At the weakest strengths (1e-7, 1e-8) the budget, not lam, bounds the weights, as
# CLIP_benchmark's epochs bound its SGD; the head's params say how many iterations ran and whether it converged.
MAXITER = 300
# Tip-Adapter's alpha weighs the cache against the zero-shot logits: the large values let the cache decide where the
# text knows little (the shipped model on MNIST chooses 32-256; a grid ending at 4 lost 10-17 points there).
ALPHAS = [2.0**e for e in range(-2, 11)]
BETAS = [1.0, 3.0, 5.5, 8.0, 12.0, 20.0, 30.0]
BLENDS = [0.0, 0.25, 0.5, 0.75, 0.9]
FOLDS = 4


@dataclass
class Head:
    method: str
    arrays: dict[str, np.ndarray]
    params: dict = field(default_factory=dict)  # the chosen hyper-parameters
    meta: dict = field(default_factory=dict)  # what its file says of it (zsclip.fewshot.files), once saved

    def logits(self, features: np.ndarray) -> np.ndarray:
        f = np.asarray(features, dtype=np.float32)
        a = self.arrays
        if self.method == "tip-adapter":
            s, alpha, beta = self.params["logit_scale"], self.params["alpha"], self.params["beta"]
            affinity = np.exp(-beta * (1.0 - f @ a["keys"].T))
            return s * (f @ a["text"].T) + alpha * (affinity @ a["values"])
        return f @ a["weights"].T + a["bias"]

    def linear(self) -> tuple[np.ndarray, np.ndarray] | None:
        if self.method == "tip-adapter":
            return None
        return self.arrays["weights"], self.arrays["bias"]


def fit(method: str, x: np.ndarray, y: np.ndarray, text: np.ndarray, logit_scale: float, seed: int = 0) -> Head:
    """The head of `method` fitted to unit features `x` [n, d] with labels `y` and the text weights [c, d]."""
    from threadpoolctl import threadpool_limits  # scikit-learn's own dependency

    fits = {"linear-probe": _linear_probe, "tip-adapter": _tip_adapter, "prototype": _prototype}
    if method not in fits:
        raise ValueError(f"--method {method}: use one of {', '.join(METHODS)}")
    # NumPy and SciPy each bring an OpenBLAS whose idle threads spin: on 2 cores the two pools fight over the small
    # products of a fit and make it 3x slower than one thread each (bench/fewshot.py).
    with threadpool_limits(1, user_api="blas"):
        return fits[method](np.asarray(x, dtype=np.float32), y, text, logit_scale, seed)


# -- linear probe ------------------------------------------------------------------------------------------
def logistic(
    x: np.ndarray,
    y: np.ndarray,
    classes: int,
    lam: float,
    prior: np.ndarray | None = None,
    start: np.ndarray | None = None,
) -> OptimizeResult:
    """scipy's result whose .x is (W [classes, d], b [classes]) as one vector, minimising mean cross-entropy +
    lam/2 |W - prior|^2 (bias unpenalised); `start` is such a vector to begin from (default: the prior, no bias);
    .nit and .status (1: the MAXITER budget ran out) say whether it converged."""
    from scipy.optimize import minimize

    n, d = x.shape
    # float64: in float32 the path's fits differ between BLAS kernels (CPU families) by enough to change which lam
    # validates best (a 1e-6 change of the features moved held-out accuracy by 7 points); in float64 by none.
    x = np.ascontiguousarray(x, dtype=np.float64)
    rows = np.arange(n)
    w0 = np.zeros((classes, d)) if prior is None else prior.astype(np.float64)

    def loss(theta):
        w, b = theta[: classes * d].reshape(classes, d), theta[classes * d :]
        z = x @ w.T
        z += b
        top = z.max(axis=1, keepdims=True)
        z -= top
        np.exp(z, out=z)
        total = z.sum(axis=1, keepdims=True)
        picked = np.einsum("nd,nd->n", x, w[y]) + b[y]
        diff = w - w0
        value = np.mean(np.log(total[:, 0]) + top[:, 0] - picked, dtype=np.float64)
        value += 0.5 * lam * float(np.vdot(diff, diff))
        z /= total * n  # softmax minus one-hot, over n: d loss / d logits
        z[rows, y] -= 1.0 / n
        grad = np.concatenate([(z.T @ x + lam * diff).ravel(), z.sum(axis=0)])
        return value, grad.astype(np.float64)

    start = np.concatenate([w0.ravel(), np.zeros(classes)]).astype(np.float64) if start is None else start
    return minimize(loss, start, jac=True, method="L-BFGS-B", options={"maxiter": MAXITER})


def _split(theta: np.ndarray, classes: int) -> tuple[np.ndarray, np.ndarray]:
    d = len(theta) // classes - 1
    return theta[: classes * d].reshape(classes, d), theta[classes * d :]


def regularisation_path(x, y, classes: int, lams: list[float], prior: np.ndarray | None) -> list[OptimizeResult]:
    """The fit (logistic) for each lam of `lams` (strongest first), each starting from the one before."""
    out, theta = [], None
    for lam in lams:
        out.append(logistic(x, y, classes, lam, prior, theta))
        theta = out[-1].x
    return out


def _linear_probe(x, y, text, logit_scale, seed) -> Head:
    classes = len(text)
    priors = {"zero-shot": (logit_scale * text).astype(np.float32), "none": None}
    candidates = [(lam, name) for name in priors for lam in LAMS]
    solutions = []  # the first fold's, one per candidate: where the fit on all the shots starts

    def accuracies(train, test) -> list[float]:
        out = []
        for prior in priors.values():
            theta, best, past_peak = None, -1.0, False
            # Once the validation accuracy has clearly fallen (by more than the noise of the strong-lam end, where
            # the fit barely moves from the prior), a weaker lam only fits the training fold harder, and those fits
            # are the slowest of the path: the rest of this prior's path is not a candidate.
            margin = max(0.01, 2.0 / len(test))
            for lam in LAMS:
                if not past_peak:
                    theta = logistic(x[train], y[train], classes, lam, prior, theta).x
                    w, b = _split(theta, classes)
                    accuracy = float(((x[test] @ w.T + b).argmax(-1) == y[test]).mean())
                    past_peak, best = accuracy < best - margin, max(best, accuracy)
                out.append(accuracy if not past_peak else -1.0)
                solutions.append(theta)
        return out

    # Every fold: one validation fold (as CLIP_benchmark sweeps on one validation split) chose by a coin flip among
    # lams within its noise, and on 1 draw in 20 kept a probe 15 points below the best; with all folds the worst
    # of those draws is 4 points below (tests/test_fewshot.py). 100 classes x 16 shots: about 8 s on 2 cores.
    chosen = _cross_validate_all(y, candidates, accuracies, seed)
    if chosen is None:  # 1 shot: nothing to validate on
        lam, prior = DEFAULT_LAM, "zero-shot"
        solved = regularisation_path(x, y, classes, [v for v in LAMS if v >= lam], priors[prior])[-1]
    else:
        lam, prior = chosen
        solved = logistic(x, y, classes, lam, priors[prior], solutions[candidates.index(chosen)])
    w, b = (a.astype(np.float32) for a in _split(solved.x, classes))
    params = {"lam": lam, "prior": prior, "iterations": int(solved.nit), "converged": bool(solved.status != 1)}
    return Head("linear-probe", {"weights": w, "bias": b}, params)


# -- tip-adapter and prototypes ----------------------------------------------------------------------------
def _tip_adapter(x, y, text, logit_scale, seed) -> Head:
    classes = len(text)

    def head(train, alpha, beta):
        values = np.zeros((len(train), classes), dtype=np.float32)
        values[np.arange(len(train)), y[train]] = 1.0
        params = {"logit_scale": float(logit_scale), "alpha": alpha, "beta": beta}
        return Head("tip-adapter", {"keys": x[train], "values": values, "text": text.astype(np.float32)}, params)

    def accuracy(train, test, alpha, beta):
        return float((head(train, alpha, beta).logits(x[test]).argmax(-1) == y[test]).mean())

    chosen = _cross_validate(y, [(a, b) for a in ALPHAS for b in BETAS], accuracy, seed) or (1.0, 5.5)
    return head(np.arange(len(y)), *chosen)


def _prototype(x, y, text, logit_scale, seed) -> Head:
    def head(train, blend):
        means = np.stack([_unit_mean(x[train][y[train] == c], text[c]) for c in range(len(text))])
        weights = (logit_scale * (blend * text + (1.0 - blend) * means)).astype(np.float32)
        return Head("prototype", {"weights": weights, "bias": np.zeros(len(text), np.float32)}, {"blend": blend})

    def accuracy(train, test, blend):
        return float((head(train, blend).logits(x[test]).argmax(-1) == y[test]).mean())

    chosen = _cross_validate(y, [(b,) for b in BLENDS], accuracy, seed) or (0.5,)
    return head(np.arange(len(y)), *chosen)


def _unit_mean(rows: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    if not len(rows):  # a class without shots keeps its text vector
        return fallback
    mean = rows.mean(axis=0)
    return mean / max(float(np.linalg.norm(mean)), 1e-12)


def _cross_validate(y: np.ndarray, candidates: list[tuple], accuracy, seed: int) -> tuple | None:
    """The candidate with the best mean held-out accuracy over stratified folds of the shots (ties: the first),
    or None when some class has fewer than 2 shots (no fold could hold one out)."""

    def accuracies(train, test) -> list[float]:
        return [accuracy(train, test, *c) for c in candidates]

    return _cross_validate_all(y, candidates, accuracies, seed)


def _cross_validate_all(y: np.ndarray, candidates: list[tuple], accuracies, seed: int) -> tuple | None:
    """As _cross_validate, with `accuracies(train, test)` scoring every candidate of a fold at once."""
    counts = np.bincount(y)
    present = counts[counts > 0]
    if len(present) < 2 or present.min() < 2:
        return None
    from sklearn.model_selection import StratifiedKFold

    splits = StratifiedKFold(n_splits=min(FOLDS, int(present.min())), shuffle=True, random_state=seed)
    scores = np.mean([accuracies(train, test) for train, test in splits.split(np.zeros(len(y)), y)], axis=0)
    return candidates[int(np.argmax(scores))]
