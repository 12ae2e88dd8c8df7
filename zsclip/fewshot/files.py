"""A fitted few-shot classifier as one file: safetensors (the head's arrays) with JSON metadata in its header (model
fingerprint, class names, templates, method, shots, seed, hyper-parameters, held-out accuracy) and the sha256 of
the arrays and that metadata, so a damaged file is refused, not used; a file made for other weights is refused
with one line."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from zsclip.core import atomic
from zsclip.core.errors import UsageError
from zsclip.fewshot.heads import METHODS, Head

FORMAT = "zsclip-fewshot-1"


def _digest(arrays: dict[str, np.ndarray], meta: dict) -> str:
    """The checksum of the arrays and of every metadata field but itself (class names, method, ...)."""
    h = hashlib.sha256(json.dumps({k: v for k, v in meta.items() if k != "sha256"}, sort_keys=True).encode())
    for name in sorted(arrays):
        h.update(name.encode())
        h.update(str(np.shape(arrays[name])).encode())  # a header that reshapes the same bytes is damage too
        h.update(np.ascontiguousarray(arrays[name]).tobytes())
    return h.hexdigest()


def save(path: str | os.PathLike, head: Head, meta: dict) -> None:
    """Write the classifier file atomically (a killed write leaves the previous file, or none)."""
    from safetensors.numpy import save

    arrays = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in head.arrays.items()}
    header = {**meta, "format": FORMAT, "method": head.method, "params": head.params}
    header = json.loads(json.dumps(header))  # as it will read back (tuples are lists, numbers are JSON's)
    header["sha256"] = _digest(arrays, header)
    atomic.write_bytes(Path(path), save(arrays, metadata={"zsclip": json.dumps(header)}))


def load(path: str | os.PathLike) -> tuple[Head, dict]:
    """(head, metadata) of a classifier file, or a UsageError naming the file and what is wrong."""
    from safetensors import SafetensorError
    from safetensors.numpy import load as load_bytes

    where = f"--classifier {path}"
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise UsageError(f"{where}: cannot read it ({e.strerror or e})") from None
    try:
        arrays = load_bytes(data)
        meta = json.loads(_metadata(data)["zsclip"])
    except (SafetensorError, ValueError, KeyError, TypeError, OverflowError):
        raise UsageError(f"{where}: not a zsclip classifier file, or damaged (make it again with zsclip fit)") from None
    if meta.get("format") != FORMAT:
        raise UsageError(f"{where}: not a classifier file this zsclip reads (format {meta.get('format')!r})")
    if meta.get("method") not in METHODS:
        raise UsageError(f"{where}: damaged or from another zsclip (method {meta.get('method')!r} is none of ours)")
    if _digest(arrays, meta) != meta.get("sha256"):
        raise UsageError(f"{where}: damaged (its arrays do not match their checksum); make it again with zsclip fit")
    problem = structure_problem(meta, arrays)
    if problem:  # the checksum only finds damage: anyone can recompute it after changing the file
        raise UsageError(f"{where}: not a usable classifier ({problem}); make it again with zsclip fit")
    return Head(meta["method"], arrays, meta.get("params", {}), meta), meta


# The arrays each method's head needs, as (rows, columns): C classes, D the model's width, K the shots.
SHAPES = {
    "linear-probe": {"weights": ("C", "D"), "bias": ("C",), "text": ("C", "D")},
    "prototype": {"weights": ("C", "D"), "bias": ("C",), "text": ("C", "D")},
    "tip-adapter": {"keys": ("K", "D"), "values": ("K", "C"), "text": ("C", "D")},
}
PARAMS = {"tip-adapter": ("logit_scale", "alpha", "beta")}  # numbers its logits are computed with
# What a fitted head can hold: far above anything zsclip fit makes (weights reach hundreds, alpha 1024, beta 30,
# logit scales ~100), far below what overflows to NaN once logits are computed (3e38 weights scored an eval).
LIMITS = {"logit_scale": 1e4, "alpha": 1e6, "beta": 1e4}
MAX_VALUE = 1e6


def structure_problem(meta: dict, arrays: dict[str, np.ndarray]) -> str | None:
    """What makes a file's head unusable, or None: class names (at least 2, distinct) against the arrays' shapes,
    the method's arrays and parameters, and only finite values (a NaN weight labelled every image one class and
    wrote "prob": NaN)."""
    names = meta.get("classnames")
    if not isinstance(names, list) or len(names) < 2 or not all(isinstance(n, str) and n for n in names):
        return "its class names are not a list of two or more names"
    if len(set(names)) != len(names):
        return "its class names repeat"
    scale = meta.get("logit_scale")
    if not isinstance(scale, int | float) or not np.isfinite(scale) or not 0 < scale <= LIMITS["logit_scale"]:
        return f"logit_scale {scale!r} is not a number in (0, {LIMITS['logit_scale']:g}]"
    params = meta.get("params") if isinstance(meta.get("params"), dict) else {}
    for name in PARAMS.get(meta["method"], ()):
        value = params.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value):
            return f"its {meta['method']} parameter {name} is {value!r}, not a number"
        low = 0 if name != "logit_scale" else 1e-12
        if not low <= value <= LIMITS[name]:
            return f"its {meta['method']} parameter {name} is {value!r}, outside [{low:g}, {LIMITS[name]:g}]"
    sizes: dict[str, int] = {"C": len(names)}
    for name, dims in SHAPES[meta["method"]].items():
        array = arrays.get(name)
        if array is None:
            return f"its {meta['method']} head has no {name!r} array"
        if array.ndim != len(dims) or not np.issubdtype(array.dtype, np.floating):
            return f"{name!r} has shape {list(array.shape)} ({array.dtype}), not {len(dims)}-d float"
        for dim, n in zip(dims, array.shape, strict=True):
            want = sizes.setdefault(dim, n)
            if n != want:
                what = {"C": "classes named", "D": "the width", "K": "shots"}[dim]
                return f"{name!r} has shape {list(array.shape)}, but {want} {what}"
        if array.size == 0:
            return f"{name!r} is empty"
        if not np.isfinite(array).all():
            return f"{name!r} holds NaN or infinite values"
        if float(np.abs(array).max()) > MAX_VALUE:
            return f"{name!r} holds values beyond {MAX_VALUE:g}"
    return None


def _metadata(data: bytes) -> dict:
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + n])["__metadata__"]


def check_model(meta: dict, fingerprint: str, spec: str, path: str | os.PathLike) -> None:
    if meta.get("fingerprint") != fingerprint:
        raise UsageError(
            f"--classifier {path}: made for model {meta.get('model')} (weights {str(meta.get('fingerprint'))[:19]}), "
            f"not {spec}; use --model {meta.get('model')} or fit one for this model"
        )


def model_of(path: str | os.PathLike) -> str | None:
    """The model spec a classifier file was fitted with; a file that cannot be used is refused here, before any
    model loads (else the default model's download would speak first)."""
    return load(path)[1].get("model")


def check_replaceable(path: Path) -> None:
    """Refuse an --output that is some other file: fit replaces only a classifier file (or nothing)."""
    if not path.is_file():
        return
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            n = int.from_bytes(head, "little")
            ours = n < 100_000_000 and FORMAT in _metadata(head + f.read(n))["zsclip"]
    except (OSError, ValueError, KeyError, TypeError):
        ours = False
    if not ours:
        raise UsageError(
            f"--output {path}: exists and is not a zsclip classifier file; remove it or choose another name"
        )
