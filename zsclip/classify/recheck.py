"""Labels an int8 image tower could have changed, settled by the fp32 tower (`--backend onnx-int8`).

For a batch of int8 embeddings and the classifier, zsclip.backends.int8.uncertain picks the images whose top-1
class the int8 rounding could have changed; they are read again and encoded by the fp32 image tower, and those
vectors replace the int8 ones. Their fp32 vectors go into the image store under the fp32 backend's variant, so a
later run that re-checks them (other classes) finds them there. With any other backend this does nothing.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import numpy as np

from zsclip.backends.int8 import threshold, uncertain
from zsclip.engines import ReadOptions, embed_stream
from zsclip.models.encoder import encoder_of

if TYPE_CHECKING:
    from zsclip.models import ClipModel
    from zsclip.zeroshot.classifier import Classifier

# The reading options a re-check shares with the run; it reads its few files in this process, on the local engine.
SHARED = ("store", "cache", "exact", "max_pixels", "file_timeout", "batch_size")


class Recheck:
    """Call with (paths, features) to get the features with the uncertain int8 rows replaced by fp32 ones;
    `rechecked` counts them."""

    def __init__(self, model: ClipModel, classifier: Classifier, read: ReadOptions | None = None):
        encoder = encoder_of(model)
        self.active = encoder.image == "int8"
        self.rechecked = 0
        if not self.active:
            return
        # A few-shot head: its linear weights, or (tip-adapter, not linear) every image re-checked.
        linear = classifier.head.linear() if classifier.head is not None else (classifier.weights, None)
        self.every = linear is None
        self.weights, self.bias = linear or (None, None)
        self.margin = 0.0 if self.every else threshold(encoder.errors(), self.weights)
        self.fp32 = fp32_of(model)
        read = read or ReadOptions()
        self.read = ReadOptions(workers=0, **{k: getattr(read, k) for k in SHARED if getattr(read, k) is not None})

    def __call__(self, paths: list[str], features: np.ndarray) -> np.ndarray:
        if not self.active or features is None or not len(features):
            return features
        near = np.ones(len(features), bool) if self.every else uncertain(features, self.weights, self.margin, self.bias)
        rows = np.flatnonzero(near)
        if not len(rows):
            return features
        fresh: dict[str, np.ndarray] = {}
        sources = [(paths[i], True) for i in rows]
        for batch in embed_stream(self.fp32, sources, self.read):
            if batch.features is not None:
                fresh.update(zip(batch.paths, batch.features, strict=True))
        out = features.copy()
        for i in rows:
            if paths[i] in fresh:  # a file that cannot be read again keeps its int8 vector
                out[i] = fresh[paths[i]]
                self.rechecked += 1
        return out


def fp32_of(model: ClipModel) -> ClipModel:
    """`model` with an int8 image tower swapped for the fp32 one (the same sessions); any other model as it is."""
    encoder = encoder_of(model)
    if encoder.image != "int8":
        return model
    out = copy.copy(model)
    out.backend, out.encoder = "onnx", encoder.with_image("fp32")
    return out
