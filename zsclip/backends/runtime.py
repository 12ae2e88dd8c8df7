"""The exported towers run by ONNX Runtime: NumPy in, NumPy out, no torch (zsclip.pipeline.encode and
zsclip.zeroshot.classifier call it
as ClipModel.encoder)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from zsclip.models.encoder import pooled_at
from zsclip.zeroshot.similarity import unit

if TYPE_CHECKING:
    from zsclip.backends.exports import Exports


class OnnxEncoder:
    """The image tower (`image` variant: fp32 or int8) and the fp32 text tower as ONNX Runtime sessions, opened on
    first use (a run whose vectors all come from the cache opens neither)."""

    def __init__(self, exports: Exports, image: str = "fp32", sessions: dict | None = None):
        self.exports, self.image = exports, image
        self.name = "onnx-int8" if image == "int8" else "onnx"
        self._sessions: dict[tuple[str, str], Any] = {} if sessions is None else sessions
        self._errors: np.ndarray | None = None

    def with_image(self, image: str) -> OnnxEncoder:
        """The same towers with the `image` variant of the image tower (sessions shared)."""
        return OnnxEncoder(self.exports, image, self._sessions)

    def errors(self) -> np.ndarray:
        """The int8 image tower's calibrated errors, for its label check (zsclip.backends.int8)."""
        if self._errors is None:
            self._errors = self.exports.ensure_check()
        return self._errors

    def _session(self, tower: str, variant: str):
        if (tower, variant) not in self._sessions:
            self._sessions[tower, variant] = self.exports.session(tower, variant)
        return self._sessions[tower, variant]

    def encode_images(self, pixels: np.ndarray) -> np.ndarray:
        """Unit-norm float32 image embeddings of uint8 pixels [batch, h, w, 3] (zsclip.models.encoder.Encoder)."""
        return unit(self.encode_image(self.exports.model.preprocess.normalize(pixels)))

    def text_positions(self, tokens: np.ndarray) -> np.ndarray | None:
        return pooled_at(self.pool, tokens)

    def encode_image(self, pixels: np.ndarray) -> np.ndarray:
        """Unnormalised float32 image embeddings [batch, dim] of normalised pixels [batch, 3, h, w]."""
        feeds = {"pixels": np.ascontiguousarray(pixels, dtype=np.float32)}
        return self._session("image", self.image).run(None, feeds)[0]

    @property
    def pool(self) -> dict | None:
        """How the text tower pools (zsclip.models.encoder.pooled_at), as the export recorded it."""
        return self.exports.meta().get("pool")

    def encode_text(self, tokens: np.ndarray, positions: np.ndarray | None) -> np.ndarray:
        """Unnormalised float32 text embeddings; with `positions`, the batch runs only to its last pooled token."""
        feeds = {}
        if positions is not None:
            tokens = tokens[:, : int(positions.max()) + 1]
            feeds["positions"] = positions.astype(np.int64)
        feeds["tokens"] = np.ascontiguousarray(tokens, dtype=np.int64)
        return self._session("text", "fp32").run(None, feeds)[0]
