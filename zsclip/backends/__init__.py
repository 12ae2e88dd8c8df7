"""Where vectors are computed: the PyTorch module itself, or its towers exported to ONNX Runtime on the CPU (fp32,
or an int8 image tower whose labels are checked against fp32), and the one place that decides which.

`load_model(spec, backend=...)` loads a model and switches it to its backend: every command, both engines, serve
and the Python API take their model from it, so one store holds one truth for a model. Only the encoder changes:
decoding, skip rules, streaming, the store, resume and output are the same whoever encodes.

- `torch`: the module.
- `onnx`: fp32 towers, the same vectors as torch to ~1e-6 (they share stored vectors, see vector_key_for).
- `onnx-int8`: an int8 image tower (zsclip.backends.int8) and the fp32 text tower; images whose label the int8
  rounding could change are re-encoded by the fp32 tower (zsclip.classify.recheck), so the labels are fp32's. Asked for
  by
  name only: its vectors are not torch's, so a search ranking or an eval number would differ.
- `auto` (the default where the onnx extra is installed): torch, or onnx where the model has been prepared for
  this CPU (`zsclip models --prepare SPEC`: export, then measure both on a fixed probe, zsclip.backends.probe) and
  onnx was measured no slower. auto never exports or measures inside a run, so a first run costs what torch
  costs, and the choice is the same in every run on this machine.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from zsclip.backends.encoders import ENCODERS
from zsclip.backends.exports import Exports
from zsclip.backends.int8 import builtin_images
from zsclip.backends.probe import auto_choice, choose
from zsclip.backends.runtime import OnnxEncoder
from zsclip.core.defaults import BACKENDS
from zsclip.core.errors import UsageError, ZsclipError
from zsclip.core.progress import bar, log
from zsclip.models import ClipModel
from zsclip.models import load_model as load_module
from zsclip.store.cache import Cache

if TYPE_CHECKING:
    import numpy as np

PIP = "pip install 'zsclip[onnx]'"


__all__ = [
    "ENCODERS",
    "PIP",
    "Exports",
    "OnnxEncoder",
    "builtin_images",
    "default_backend",
    "load_model",
    "onnx_installed",
    "prepare",
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
        raise UsageError(f"{backend_option(backend)}: use one of {', '.join(BACKENDS)}")
    return backend


def backend_option(value: str) -> str:
    """How the user gave this backend, for a message: the environment variable, or --backend."""
    return f"ZSCLIP_BACKEND={value}" if os.environ.get("ZSCLIP_BACKEND") == value else f"--backend {value}"


def require_onnxruntime(backend: str = "onnx") -> None:
    """One line naming the pip command when the optional extra is missing."""
    for name in ("onnxruntime", "onnx"):
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a module set to None in sys.modules (how tests uninstall one)
            found = False
        if not found:
            raise ZsclipError(f"--backend {backend} needs {name}, which is not installed: {PIP}")


def load_model(
    spec: str | None = None,
    *,
    device: str = "auto",
    precision: str | None = None,
    backend: str | None = None,
    cache: Cache | None = None,
    lazy: bool = True,
    show: bool = True,
    calibration: Callable[[ClipModel], np.ndarray] | None = None,
) -> ClipModel:
    """Load a model (zsclip.models.load_model) and switch it to the backend that computes its vectors.

    Args:
        spec: "ViT-B-32:openai", "ARCH:/path/weights.pt", "hf-hub:org/repo", a model directory or a shipped name
            (default $ZSCLIP_MODEL, else ViT-B-32:openai).
        device: auto, cpu, cuda, cuda:N or mps.
        precision: fp32, bf16 or fp16 (default: bf16 autocast on CUDA, else fp32).
        backend: torch, onnx, onnx-int8 or auto (default $ZSCLIP_BACKEND, else auto with the onnx extra, else
            torch).
        cache: the cache to use (default: the user's, $ZSCLIP_CACHE_DIR).
        lazy: build the module only when a run needs it (a fully cached run never does).
        show: progress and notes on stderr.
        calibration: uint8 pixels of the user's own images, for an int8 tower's label check when one is made.

    Returns:
        A ClipModel in eval mode; `model.backend` names what computes its vectors.

    Examples:
        >>> model = zsclip.load_model("shapes")
        >>> model.backend
        'torch'
    """

    cache = cache or Cache()
    model = load_module(spec, device=device, precision=precision, cache=cache, lazy=lazy)
    return use_backend(model, backend, cache=cache, show=show, calibration=calibration)


def use_backend(
    model: ClipModel,
    backend: str | None = None,
    *,
    cache: Cache | None = None,
    show: bool = True,
    calibration: Callable[[ClipModel], np.ndarray] | None = None,
) -> ClipModel:
    """Switch `model` (in place, and returned) to compute vectors with `backend`: torch, onnx, onnx-int8 or auto.

    onnx and onnx-int8 export what they need on first use (with a progress bar on stderr when `show`);
    `calibration(model)` gives uint8 pixels of the user's own images for the int8 check (zsclip.backends.int8). auto
    makes nothing: it takes what `prepare` measured, else torch. Raises UsageError for an ONNX backend on a GPU
    device or with non-fp32 precision."""

    backend = resolve_backend(backend)
    if backend == "auto":
        if model.device_type != "cpu" or model.precision != "fp32" or not onnx_installed():
            return _torch(model)
        backend = auto_choice(Exports(model, cache or Cache(), show=False), show)
        if backend == "torch":
            return _torch(model)
    if backend == "torch":
        return _torch(model)
    if model.device_type != "cpu":
        raise UsageError(f"--backend {backend} runs on the CPU: add --device cpu, or use --backend torch")
    if model.precision != "fp32":
        raise UsageError(f"--backend {backend} computes in fp32: drop --precision {model.precision}")
    require_onnxruntime(backend)
    exports = Exports(model, cache or Cache(), show=False, calibration=calibration)
    _prepare(exports, backend, show)
    model.backend, model.encoder = backend, ENCODERS[backend](model, exports)
    return model


def prepare(
    model: ClipModel,
    *,
    cache: Cache | None = None,
    show: bool = True,
    calibration: Callable[[ClipModel], np.ndarray] | None = None,
) -> dict:
    """Make every backend's files for `model` on this CPU (ONNX towers, their optimized graphs, the int8 tower and
    its check) and measure them on auto's probe; returns what auto will take from now on (probe.choose's record:
    `choice` and per-backend `results`). Minutes for ViT-B-32 on a laptop, once per model and machine."""

    if model.device_type != "cpu" or model.precision != "fp32":
        raise UsageError("the ONNX backends run in fp32 on the CPU: prepare a model loaded with --device cpu and fp32")
    require_onnxruntime("auto")
    exports = Exports(model, cache or Cache(), show=False, calibration=calibration)
    _prepare(exports, "onnx-int8", show)
    for tower in ("image", "text"):  # kept for this machine: a later run opens the optimized graph
        exports.session(tower)
    exports.session("image", "int8")
    return choose(exports, show, again=True)


def _torch(model: ClipModel) -> ClipModel:
    model.backend, model.encoder = "torch", ENCODERS["torch"](model, None)
    return model


def _prepare(exports: Exports, backend: str, show: bool) -> None:
    """Make what `backend` needs that is not made yet, as steps of one progress bar (once per model)."""
    steps: list[tuple[str, Callable[[], object]]] = []
    if not exports.intact("image"):
        steps.append(("exporting the image tower", lambda: exports.ensure("image")))
    if not exports.intact("text"):
        steps.append(("exporting the text tower", lambda: exports.ensure("text")))
    if backend == "onnx-int8":
        if not exports.intact("image", "int8"):
            steps.append(("making the int8 image tower", lambda: exports.ensure("image", "int8")))
        steps.append(("calibrating its label check", exports.ensure_check))  # quick when already made
    if len(steps) <= (1 if backend == "onnx-int8" else 0):
        for _, step in steps:
            step()
        return
    if show:
        what = "ONNX Runtime (onnx and onnx-int8)" if backend == "onnx-int8" else f"--backend {backend}"
        log(f"preparing {exports.model.spec} for {what} on this CPU: once per model, minutes on a laptop")
    with bar(f"preparing {exports.model.spec}", len(steps), "step", show) as progress:
        for what, step in steps:
            if progress:
                progress.update(progress.task_ids[0], extra=what)
            step()
            if progress:
                progress.advance(progress.task_ids[0])
