"""The int8 image tower and the check that keeps its labels: the fp32 labels, computed faster.

The tower: ONNX Runtime's dynamic quantization of every MatMul and Gemm (int8 weights, activations quantized per
batch at run time). Measured side by side (bench/int8_methods.py, bench/README.md) against static QDQ with
per-channel weights and calibrated activations, with and without the sensitive operations kept in fp32 (patch
embedding, final projection, the attention products), and OpenVINO + NNCF: it was the fastest and agreed with fp32
as well as any of them. No int8 method alone kept 99.5% of the labels of the small trained models (their
probabilities are flat on photos: 94-99% agreement), so:

The check. An int8 embedding differs from the fp32 one by a small error e. For an image whose int8 top-1 class is
i, any other class j gains (e . (w_j - w_i)) * logit_scale on it; the label can change only where the int8 margin
(f . (w_i - w_j)) / |w_i - w_j| is below the size e takes along such directions. That size is measured when the
tower is made: the errors e of calibration images (up to 64 of the user's own images and 64 built-in ones),
projected on differences of the classifier's rows; `threshold` takes a share of their largest projection. Images
under it are re-encoded by the fp32 tower (zsclip.classify.recheck), so the labels are fp32's wherever int8 could have
changed them (measured: >= 99.9% agreement on every data set of ../shared/data for the shipped model and a trained
ViT; the share re-encoded goes from 0.1% on a model's own domain to ~25% for a tiny model on photos).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from zsclip.core import atomic
from zsclip.datasets import shapes

if TYPE_CHECKING:
    from zsclip.models import ClipModel

CHECK_IMAGES = 64  # built-in images in the calibration of the check, besides the user's own
USER_IMAGES = 64
# The share of the largest calibrated error projection under which a margin is re-checked (bench/README:
# 0.5 kept >= 99.8% of labels, 0.75 >= 99.9%, 1.0 all of them, on the data sets measured).
SHARE = 0.75
DIRECTIONS = 4000  # class-difference directions sampled for the threshold


def quantize_image_tower(source: Path, target: Path) -> None:
    """Dynamic int8 quantization of `source` into `target`, atomically."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from zsclip.backends.onnx_export import quiet  # heavy: torch, only when quantizing

    with atomic.written_at(target) as tmp, quiet():
        # MatMul and Gemm only: ONNX Runtime's ConvInteger is slower than its fp32 convolution on CPUs and cost
        # accuracy on the shipped ResNet (min cosine 0.9990 vs 0.99994); a ViT has just one convolution.
        quantize_dynamic(str(source), str(tmp), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])


def errors(fp32: np.ndarray, int8: np.ndarray) -> np.ndarray:
    """The int8 tower's error on each calibration image: the difference of the unit embeddings."""
    return (int8 - fp32).astype(np.float32)


def threshold(errors: np.ndarray, weights: np.ndarray, seed: int = 0) -> float:
    """The margin under which an int8 label is re-checked with this classifier (see the module docstring)."""
    n = len(weights)
    if n < 2 or len(errors) == 0:
        return 0.0
    if n * (n - 1) // 2 <= DIRECTIONS:
        i, j = np.triu_indices(n, 1)
    else:
        rng = np.random.default_rng(seed)
        i, j = rng.integers(0, n, DIRECTIONS), rng.integers(0, n, DIRECTIONS)
        i, j = i[i != j], j[i != j]
    directions = weights[i] - weights[j]
    norms = np.linalg.norm(directions, axis=-1, keepdims=True)
    directions = directions / np.maximum(norms, 1e-12)
    return SHARE * float(np.abs(errors @ directions.T).max())


def uncertain(features: np.ndarray, weights: np.ndarray, margin: float, bias: np.ndarray | None = None) -> np.ndarray:
    """Per image, whether its top-1 class could differ under the fp32 tower: the smallest normalised margin of its
    top class over any other is below `margin`. `weights` (and `bias`) are any linear classifier's: the margin of
    class i over j is (f . (w_i - w_j) + b_i - b_j) / |w_i - w_j|."""
    if margin <= 0 or len(features) == 0:
        return np.zeros(len(features), dtype=bool)
    scores = features @ weights.T + (0.0 if bias is None else bias)
    top = scores.argmax(-1)
    rows = np.arange(len(features))
    gaps = scores[rows, top][:, None] - scores
    norms = (weights * weights).sum(-1)
    distance = np.sqrt(np.maximum(norms[top][:, None] + norms[None, :] - 2.0 * (weights[top] @ weights.T), 1e-12))
    radius = gaps / distance
    radius[rows, top] = np.inf
    return radius.min(-1) < margin


def builtin_images(model: ClipModel, n: int = 64) -> np.ndarray:
    """Built-in pictures as the model's uint8 pixels: shapes-world scenes and blurred noise, alternately."""
    from PIL import Image, ImageFilter

    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        if i % 2:
            noise = rng.integers(0, 256, (56, 56, 3), dtype=np.uint8)
            image = Image.fromarray(noise).resize((224, 224), Image.BILINEAR).filter(ImageFilter.GaussianBlur(2))
        else:
            colour, shape = shapes.COMPOSITIONS[(i // 2) % len(shapes.COMPOSITIONS)]
            image = shapes.render(shapes.sample_scene(rng, colour, shape), 224, rng)
        out.append(model.preprocess.geometry(image))
    return np.stack(out)
