"""The backends by name: what `--backend torch|onnx|onnx-int8` runs, each an Encoder (zsclip.models.encoder)."""

from __future__ import annotations

from collections.abc import Callable

from zsclip.backends.exports import Exports
from zsclip.backends.runtime import OnnxEncoder
from zsclip.models import ClipModel
from zsclip.models.encoder import Encoder, TorchEncoder

# What computes the vectors, by --backend name: each an Encoder (zsclip.models.encoder), made from the model and
# its ONNX files (None for torch). A new backend is a class implementing Encoder and one row here (README:
# "A new backend"); `auto` is not a row: it picks one of these (zsclip.backends.probe).
ENCODERS: dict[str, Callable[[ClipModel, Exports | None], Encoder]] = {
    "torch": lambda model, exports: TorchEncoder(model),
    "onnx": lambda model, exports: OnnxEncoder(exports, "fp32"),
    "onnx-int8": lambda model, exports: OnnxEncoder(exports, "int8"),
}
