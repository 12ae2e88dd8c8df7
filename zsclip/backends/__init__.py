"""Where vectors are computed: the PyTorch module itself, or its towers exported to ONNX Runtime on the CPU (fp32,
or an int8 image tower whose labels are checked against fp32), chosen per model by `auto`.

Only the encoder changes: decoding, skip rules, streaming, the store, resume and output are the same whoever
encodes. `use_backend(model, "onnx")` fills `ClipModel.backend` and `ClipModel.encoder`, which zsclip.encode and
zsclip.text call. The exports live in the cache (zsclip.backends.exports), made once per model with a progress bar
(minutes on a laptop for ViT-B-32), and after that a run needs no torch: with its prompts cached too, a classify
run on ONNX imports neither torch nor open_clip.

- `onnx`: fp32 towers, the same vectors as torch to ~1e-6.
- `onnx-int8`: an int8 image tower (zsclip.backends.int8) and the fp32 text tower; images whose label the int8
  rounding could change are re-encoded by the fp32 tower (zsclip.recheck), so the labels are fp32's.
- `auto` (the default where the onnx extra is installed): the fastest of torch, onnx and onnx-int8 that keeps the
  labels on a fixed probe, measured once per model and machine (zsclip.backends.probe); torch on a GPU.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..defaults import BACKENDS
from ..errors import UsageError, ZsclipError
from ..progress import bar, log
from .exports import Exports
from .int8 import builtin_images
from .probe import choose, remembered
from .runtime import OnnxEncoder

if TYPE_CHECKING:
    import numpy as np

    from ..cache import Cache
    from ..models import ClipModel

PIP = "pip install 'zsclip[onnx]'"

__all__ = [
    "PIP",
    "Exports",
    "OnnxEncoder",
    "builtin_images",
    "default_backend",
    "onnx_installed",
    "require_onnxruntime",
    "resolve_backend",
    "use_backend",
]


def onnx_installed() -> bool:
    """Whether the onnx extra is installed (found, not imported: importing onnx costs time a run may not need)."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnx"))


def default_backend() -> str:
    """$ZSCLIP_BACKEND, else auto where the onnx extra is installed, else torch."""
    return os.environ.get("ZSCLIP_BACKEND") or ("auto" if onnx_installed() else "torch")


def resolve_backend(backend: str | None = None) -> str:
    backend = backend or default_backend()
    if backend not in BACKENDS:
        raise UsageError(f"--backend {backend}: use one of {', '.join(BACKENDS)}")
    return backend


def require_onnxruntime(backend: str = "onnx") -> None:
    """One line naming the pip command when the optional extra is missing."""
    for name in ("onnxruntime", "onnx"):
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a module set to None in sys.modules (how tests uninstall one)
            found = False
        if not found:
            raise ZsclipError(f"--backend {backend} needs {name}, which is not installed: {PIP}")


def use_backend(
    model: ClipModel,
    backend: str | None = None,
    *,
    cache: Cache | None = None,
    show: bool = True,
    calibration: Callable[[], np.ndarray] | None = None,
) -> ClipModel:
    """Switch `model` (in place, and returned) to compute vectors with `backend`: torch, onnx, onnx-int8 or auto.

    The first use for a model exports its towers (and makes the int8 tower, its label check and auto's
    measurement), with a progress bar on stderr when `show`; `calibration()` gives uint8 pixels of the user's own
    images for the int8 check (zsclip.backends.int8). Raises UsageError for an ONNX backend on a GPU device or with
    non-fp32 precision."""
    from ..cache import Cache

    backend = resolve_backend(backend)
    if backend == "torch" or (backend == "auto" and model.device_type != "cpu"):
        return _torch(model)
    if model.device_type != "cpu":
        raise UsageError(f"--backend {backend} runs on the CPU: add --device cpu, or use --backend torch")
    if model.precision != "fp32":
        if backend == "auto":
            return _torch(model)
        raise UsageError(f"--backend {backend} computes in fp32: drop --precision {model.precision}")
    require_onnxruntime(backend)
    exports = Exports(model, cache or Cache(), show=False, calibration=calibration)
    _prepare(exports, backend, show)
    if backend == "auto":
        backend = choose(exports, show)["choice"]
        if backend == "torch":
            return _torch(model)
    model.backend, model.encoder = backend, OnnxEncoder(exports, "int8" if backend == "onnx-int8" else "fp32")
    return model


def _torch(model: ClipModel) -> ClipModel:
    model.backend, model.encoder = "torch", None
    return model


def _prepare(exports: Exports, backend: str, show: bool) -> None:
    """Make what `backend` needs that is not made yet, as steps of one progress bar (once per model)."""
    steps: list[tuple[str, Callable[[], object]]] = []
    if not exports.intact("image"):
        steps.append(("exporting the image tower", lambda: exports.ensure("image")))
    if not exports.intact("text"):
        steps.append(("exporting the text tower", lambda: exports.ensure("text")))
    if backend in ("onnx-int8", "auto"):
        if not exports.intact("image", "int8"):
            steps.append(("making the int8 image tower", lambda: exports.ensure("image", "int8")))
        steps.append(("calibrating its label check", exports.ensure_check))  # quick when already made
    if backend == "auto" and remembered(exports) is None:
        steps.append(("measuring torch, onnx and onnx-int8", lambda: choose(exports, show)))
    if len(steps) <= (1 if backend in ("onnx-int8", "auto") else 0):
        for _, step in steps:
            step()
        return
    if show:
        log(f"preparing {exports.model.spec} for --backend {backend} on this CPU: once per model, minutes on a laptop")
    with bar(f"preparing {exports.model.spec}", len(steps), "step", show) as progress:
        for what, step in steps:
            if progress:
                progress.update(progress.task_ids[0], extra=what)
            step()
            if progress:
                progress.advance(progress.task_ids[0])
