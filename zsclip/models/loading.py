"""Spec -> a ClipModel in eval mode on its device, with one-line errors for everything that can go wrong; built
without random initialisation, strictly from the checkpoint."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from zsclip.core.defaults import DEFAULT_MODEL, PRECISIONS
from zsclip.core.errors import UsageError, ZsclipError
from zsclip.models.clip import INFO_KEYS, ClipModel, convolutional
from zsclip.models.files import local_weights
from zsclip.models.fingerprint import fingerprint_spec
from zsclip.models.hub import (
    cached_weights,
    checkpoint_arch,
    hub_config_file,
    hub_offline,
    hub_reachable,
    quickgelu_name,
)
from zsclip.models.preprocess import Preprocess
from zsclip.models.spec import ALTERNATIVES, CONFIG_NAME, ModelSpec, parse_spec
from zsclip.store.cache import Cache

if TYPE_CHECKING:
    import torch


def gpu_possible() -> bool:
    """False where this machine certainly has no GPU torch could use, known without importing torch (seconds):
    Linux without an NVIDIA, ROCm or WSL GPU device, a Mac that is not Apple silicon."""
    if sys.platform.startswith("linux"):
        return any(os.path.exists(p) for p in _GPU_DEVICES)
    if sys.platform == "darwin":
        return platform.machine() == "arm64"
    return True  # elsewhere only torch can tell


_GPU_DEVICES = ("/dev/nvidiactl", "/dev/nvidia0", "/proc/driver/nvidia/version", "/dev/kfd", "/dev/dxg")


def resolve_device(device: str = "auto") -> torch.device:
    """The device to run on, as torch names it; "auto" on a machine with no GPU is "cpu" without importing torch
    (see gpu_possible): resolve_device_name gives the name alone."""
    import torch

    return torch.device(resolve_device_name(device))


def resolve_device_name(device: str = "auto") -> str:
    if device == "auto" and not gpu_possible():
        return "cpu"
    if device == "cpu":
        return "cpu"
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device not in ("cpu", "cuda", "mps") and not device.startswith("cuda:"):
        raise UsageError(f"--device {device}: use auto, cpu, cuda, cuda:N or mps")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UsageError("--device mps: MPS is not available on this machine; use --device cpu")
    return device


def resolve_precision(precision: str | None, device: str) -> str:
    """fp32 on CPU (bf16 autocast is several times slower there), bf16 autocast on CUDA by default. `device` is a
    device name ("cuda:1") or a torch.device."""
    if precision is None or precision == "auto":
        return "bf16" if str(device).startswith("cuda") else "fp32"
    if precision not in PRECISIONS:
        raise UsageError(f"--precision {precision}: use one of {', '.join(PRECISIONS)}")
    return precision


def load_model(
    spec: str | None = None,
    *,
    device: str = "auto",
    precision: str | None = None,
    cache: Cache | None = None,
    lazy: bool = True,
) -> ClipModel:
    """Load a model by spec (default $ZSCLIP_MODEL or ViT-B-32:openai), in eval mode on `device`.

    When the cache knows these weights (from an earlier load) and `lazy`, the module is built on first use only
    (see ClipModel): a run that finds all its prompts and images cached never builds it."""
    spec = spec or os.environ.get("ZSCLIP_MODEL") or DEFAULT_MODEL
    cache = cache or Cache()
    parsed = parse_spec(spec, cache)
    dev = resolve_device_name(device)
    prec = resolve_precision(precision, dev)
    _check_files(parsed)
    try:
        fingerprint = fingerprint_spec(parsed, cache)
    except ZsclipError:
        raise
    except Exception as exc:  # an unreadable weights file, a broken hub cache
        raise ZsclipError(f"cannot load model {spec}: {_one_line(exc)}; {ALTERNATIVES}") from exc
    info = cache.model_info(fingerprint) if lazy else None
    if info is not None and all(k in info for k in INFO_KEYS):
        cache.remember_model(fingerprint, spec)
        preprocess = Preprocess.from_cfg(info["preprocess_cfg"])
        return ClipModel(
            spec,
            parsed.arch,
            None,
            preprocess,
            None,
            fingerprint,
            dev,
            prec,
            info.get("metadata") or {},
            info=info,
            loader=lambda: _build(parsed, dev),
        )
    model, preprocess, tokenizer, metadata = _build(parsed, dev)
    clip = ClipModel(spec, parsed.arch, model, preprocess, tokenizer, fingerprint, dev, prec, metadata)
    cache.remember_model(fingerprint, spec, clip.describe())
    return clip


def _check_files(parsed: ModelSpec) -> None:
    """The files a local spec names are there (before they are hashed for the fingerprint)."""
    if parsed.kind == "checkpoint" and not Path(parsed.source).is_file():
        raise ZsclipError(
            f"cannot load model {parsed.spec}: weights file {parsed.source} does not exist; {ALTERNATIVES}"
        )
    if parsed.kind in ("local-dir", "shipped"):
        directory = Path(parsed.source)
        if not (directory / CONFIG_NAME).is_file():
            raise ZsclipError(
                f"cannot load model {parsed.spec}: {directory / CONFIG_NAME} does not exist; {ALTERNATIVES}"
            )
        if local_weights(directory) is None:
            raise ZsclipError(
                f"cannot load model {parsed.spec}: no weights (*.safetensors, *.bin, *.pth) in {directory}"
            )


def _build(parsed: ModelSpec, dev: str) -> tuple:
    """(module on `dev` in eval mode, preprocess, tokenizer, metadata); every failure is one ZsclipError line."""
    import open_clip
    import torch

    try:
        model, _, tokenizer, metadata = _LOADERS[parsed.kind](parsed)
        preprocess = Preprocess.from_cfg(open_clip.get_model_preprocess_cfg(model))
    except ZsclipError:
        raise
    except Exception as exc:  # open_clip and torch raise many kinds for a bad file; the user needs one line
        raise ZsclipError(f"cannot load model {parsed.spec}: {_one_line(exc)}; {ALTERNATIVES}") from exc
    model = model.to(dev).eval()
    if convolutional(model.visual):
        model.visual.to(memory_format=torch.channels_last)
    return model, preprocess, tokenizer, metadata


def _one_line(exc: BaseException, limit: int = 300) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:limit]


_INIT_FUNCTIONS = (
    "uniform_",
    "normal_",
    "trunc_normal_",
    "constant_",
    "ones_",
    "zeros_",
    "eye_",
    "dirac_",
    "xavier_uniform_",
    "xavier_normal_",
    "kaiming_uniform_",
    "kaiming_normal_",
    "orthogonal_",
    "sparse_",
)


@contextlib.contextmanager
def _no_random_init() -> Iterator[None]:
    """Build modules without their random initialisation (torch.nn.init does nothing inside), for a model whose
    every parameter the checkpoint then overwrites: ~1 s of a ViT-B-32 load on 2 CPU cores was initialising
    weights only to throw them away. Safe because the weights are loaded with strict=True (a missing key is an
    error, not an uninitialised tensor) and require_pretrained=True (no weights found is an error); buffers that
    are not saved (the causal mask) are computed by tensor ops, not torch.nn.init. Not thread-safe: nothing else
    builds modules while a model loads."""
    import torch

    saved = {name: getattr(torch.nn.init, name) for name in _INIT_FUNCTIONS if hasattr(torch.nn.init, name)}

    def skip(tensor, *args, **kwargs):
        return tensor

    for name in saved:
        setattr(torch.nn.init, name, skip)
    try:
        yield
    finally:
        for name, function in saved.items():
            setattr(torch.nn.init, name, function)


def _quiet_create(*args, **kwargs):
    import open_clip

    # open_clip logs and warns freely; the result or our own error message is what users need.
    with warnings.catch_warnings(), _no_random_init():
        warnings.simplefilter("ignore")
        logger = logging.getLogger()
        level = logger.level
        logger.setLevel(logging.CRITICAL)
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(*args, require_pretrained=True, **kwargs)
        finally:
            logger.setLevel(level)
    return model, preprocess


def _load_pretrained(parsed: ModelSpec):
    import open_clip

    arch, tag = parsed.arch, parsed.source
    cached = cached_weights(arch, tag)
    if not cached:
        ok, why = hub_reachable()
        if not ok:
            raise ZsclipError(
                f"cannot load model {parsed.spec}: its weights are not downloaded and {why}; with the weights file "
                f"at hand use --model {quickgelu_name(arch, tag)}:/path/to/weights (the same model), or a model "
                "directory (--model /path/to/dir), or set ZSCLIP_MODEL"
            )
    cfg = open_clip.get_pretrained_cfg(arch, tag)
    # OpenAI's weights were trained with QuickGELU; open_clip's plain names use nn.GELU and would only warn.
    quick_gelu = bool(cfg.get("quick_gelu")) and "quickgelu" not in arch.lower()
    with hub_offline(bool(cached)):
        try:
            model, preprocess = _quiet_create(arch, pretrained=tag, force_quick_gelu=quick_gelu)
        except RuntimeError as exc:
            if "download" not in str(exc).lower():
                raise
            raise ZsclipError(
                f"cannot load model {parsed.spec}: download failed ({_one_line(exc)}); {ALTERNATIVES}"
            ) from exc
        tokenizer = open_clip.get_tokenizer(arch)  # SigLIP-style tokenizers come from the hub cache too
    return model, preprocess, tokenizer, {}


def _load_checkpoint(parsed: ModelSpec):
    import open_clip

    path = Path(parsed.source)
    try:
        model, preprocess = _quiet_create(checkpoint_arch(parsed), pretrained=str(path))
    except Exception as exc:  # a state dict of another architecture fails in many ways
        raise ZsclipError(
            f"cannot load model {parsed.spec}: {path} does not hold {parsed.arch} weights ({_one_line(exc)}); "
            "check the architecture name against `zsclip models`"
        ) from exc
    return model, preprocess, open_clip.get_tokenizer(parsed.arch), {}


def _load_local_dir(parsed: ModelSpec):
    import open_clip

    directory = Path(parsed.source)
    config_path = directory / CONFIG_NAME
    model, preprocess = _quiet_create(f"local-dir:{directory}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{directory}")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    return model, preprocess, tokenizer, config.get("zsclip", {})


def _load_hf_hub(parsed: ModelSpec):
    import open_clip

    cached = hub_config_file(parsed.source) is not None
    if not cached:
        ok, why = hub_reachable()
        if not ok:
            raise ZsclipError(f"cannot load model {parsed.spec}: not downloaded and {why}; {ALTERNATIVES}")
    with hub_offline(cached):
        model, preprocess = _quiet_create(parsed.spec)
        tokenizer = open_clip.get_tokenizer(parsed.spec)
    config_file = hub_config_file(parsed.source)
    config = json.loads(Path(config_file).read_text(encoding="utf-8")) if config_file else {}
    return model, preprocess, tokenizer, config.get("zsclip", {})


_LOADERS = {
    "pretrained": _load_pretrained,
    "checkpoint": _load_checkpoint,
    "local-dir": _load_local_dir,
    "shipped": _load_local_dir,
    "hf-hub": _load_hf_hub,
}
