"""What identifies a model's weights (the key of everything cached for it), computed without loading them."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

from zsclip.core.errors import UsageError
from zsclip.models.files import local_weights
from zsclip.models.hub import checkpoint_arch, hub_config_file
from zsclip.models.spec import CONFIG_NAME, ModelSpec, parse_spec
from zsclip.store.cache import Cache

if TYPE_CHECKING:
    from zsclip.models.clip import ClipModel


def fingerprint_spec(spec: str | ModelSpec, cache: Cache | None = None) -> str:
    """Architecture + weights identity: the pretrained tag, a weights hash, or the hub commit.

    Computed without loading the model, so `cache clear --model` is cheap; file hashes are memoised.
    """
    parsed = spec if isinstance(spec, ModelSpec) else parse_spec(spec)
    cache = cache or Cache()
    if parsed.kind == "pretrained":
        return f"{parsed.arch}:{parsed.source}"
    if parsed.kind == "checkpoint":  # the built architecture: the same file may build with QuickGELU or not
        return f"{checkpoint_arch(parsed)}@sha256:{cache.file_sha256(parsed.source)[:20]}"
    if parsed.kind == "hf-hub":
        config_file = hub_config_file(parsed.source)
        # The snapshot folder name is the hub commit, which pins the weights.
        revision = Path(config_file).parent.name if config_file else "unknown"
        return f"hf-hub:{parsed.source}@{revision}"
    directory = Path(parsed.source)
    weights = local_weights(directory)
    if weights is None:
        raise UsageError(f"--model {parsed.spec}: no weights in {directory}")
    config = (directory / CONFIG_NAME).read_bytes()
    digest = hashlib.sha256(config + cache.file_sha256(weights).encode()).hexdigest()
    return f"local-dir@sha256:{digest[:20]}"


def vector_key(model: ClipModel, tower: str = "image") -> str:
    """What, besides the weights, a cached vector depends on (see vector_key_for)."""
    return vector_key_for(model.precision, getattr(model, "backend", "torch"), tower)


def vector_key_for(precision: str, backend: str, tower: str = "image") -> str:
    """The precision, and for onnx-int8's image tower the backend. torch and onnx compute the same fp32 function
    (vectors equal to ~1e-6, as torch's own kernels differ between CPUs), so they share vectors: a model prepared
    for ONNX Runtime later reuses what torch stored, and every command finds the others' vectors. int8 rounds: its
    image vectors are kept apart (its text tower is onnx's fp32 one)."""
    return f"{precision}+onnx-int8" if backend == "onnx-int8" and tower == "image" else precision
