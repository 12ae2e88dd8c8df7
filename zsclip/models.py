"""Model specs -> loaded open_clip models with their preprocessing, tokenizer, logit scale and fingerprint.

Spec strings, resolved in this order:
  NAME                    a model shipped inside zsclip (see `shipped_models()`)
  hf-hub:org/repo         open_clip's Hugging Face hub schema
  local-dir:/path         open_clip's local directory schema (open_clip_config.json + weights)
  /path/to/dir            a directory holding open_clip_config.json (what `zsclip train` writes)
  ARCH:/path/weights.pt   a local checkpoint (.pt/.pth/.bin/.safetensors) of an open_clip architecture
  ARCH:TAG                open_clip pretrained weights, e.g. ViT-B-32:openai (downloaded to the HF cache)
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import logging
import os
import socket
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import open_clip
import torch

from . import atomic
from .cache import Cache
from .defaults import DEFAULT_MODEL, PRECISIONS
from .errors import UsageError, ZsclipError

CONFIG_NAME = "open_clip_config.json"
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")
_ALTERNATIVES = (
    "use a local checkpoint (--model ARCH:/path/to/weights.pt), a model directory (--model /path/to/dir), "
    "or set ZSCLIP_MODEL"
)


@dataclass(frozen=True)
class ModelSpec:
    """A parsed spec: what to load, and from where."""

    spec: str
    kind: str  # "shipped" | "hf-hub" | "local-dir" | "checkpoint" | "pretrained"
    arch: str  # open_clip model name, or the schema string for hf-hub/local-dir
    source: str  # pretrained tag, file path, directory path or hub repo


@dataclass
class ClipModel:
    """A loaded CLIP model in eval mode and everything needed to use it the way it was trained."""

    spec: str
    arch: str
    model: torch.nn.Module
    preprocess: Callable
    tokenizer: Callable
    fingerprint: str
    device: torch.device
    precision: str = "fp32"
    metadata: dict = field(default_factory=dict)
    channels_last: bool = False  # convolutional image towers run faster with NHWC tensors
    # Where vectors are computed: "torch" runs `model`; zsclip.backends.use_backend sets "onnx" or "onnx-int8" and
    # fills `encoder` (image and text towers in ONNX Runtime), which zsclip.encode and zsclip.text then call.
    backend: str = "torch"
    encoder: Any = None

    @property
    def logit_scale(self) -> float:
        """The learned temperature as a multiplier, exp(t) clamped at 100 as in CLIP training."""
        return float(self.model.logit_scale.detach().exp().clamp(max=100).item())

    @property
    def recommended_templates(self) -> str | None:
        return self.metadata.get("templates")

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)


# -- spec resolution ---------------------------------------------------------------------------------------
def shipped_models() -> dict[str, Path]:
    """Models that ship inside the package: name -> directory in open_clip's local-dir format."""
    root = resources.files("zsclip") / "shipped"
    if not root.is_dir():
        return {}
    return {
        entry.name: Path(str(entry)) for entry in root.iterdir() if entry.is_dir() and (entry / CONFIG_NAME).is_file()
    }


def parse_spec(spec: str) -> ModelSpec:
    """Resolve a spec string to what it names; unknown names are a usage error with close suggestions."""
    spec = spec.strip()
    if not spec:
        raise UsageError("--model is empty: give a spec such as ViT-B-32:openai or a model directory")
    shipped = shipped_models()
    if spec in shipped:
        return ModelSpec(spec, "shipped", f"local-dir:{shipped[spec]}", str(shipped[spec]))
    if spec.startswith("hf-hub:"):
        return ModelSpec(spec, "hf-hub", spec, spec[len("hf-hub:") :])
    if spec.startswith("local-dir:"):
        path = _expand(spec[len("local-dir:") :])
        return ModelSpec(spec, "local-dir", f"local-dir:{path}", str(path))
    path = _expand(spec)
    if os.path.isdir(path):  # os.path: False for any name the OS rejects (too long, NUL), not an exception
        if not os.path.isfile(path / CONFIG_NAME):
            raise UsageError(f"--model {spec}: directory has no {CONFIG_NAME} (the format zsclip train writes)")
        return ModelSpec(spec, "local-dir", f"local-dir:{path}", str(path))
    arch, sep, rest = spec.partition(":")
    models = open_clip.list_models()
    if arch not in models:
        if os.sep in spec or path.suffix in WEIGHT_SUFFIXES:
            raise UsageError(f"--model {spec}: no such directory; {_ALTERNATIVES}")
        raise UsageError(f"unknown model {spec!r}{_suggest(spec, _known_specs())}")
    if not sep or not rest:
        tags = open_clip.list_pretrained_tags_by_model(arch)
        hint = f"; pretrained tags: {', '.join(tags)}" if tags else ""
        raise UsageError(f"--model {spec}: give weights as {arch}:TAG or {arch}:/path/to/weights.pt{hint}")
    if os.sep in rest or rest.endswith(WEIGHT_SUFFIXES) or os.path.isfile(_expand(rest)):
        return ModelSpec(spec, "checkpoint", arch, str(_expand(rest)))
    if open_clip.get_pretrained_cfg(arch, rest):
        return ModelSpec(spec, "pretrained", arch, rest)
    tags = open_clip.list_pretrained_tags_by_model(arch)
    raise UsageError(
        f"unknown pretrained tag {rest!r} for {arch}"
        + (f"; available: {', '.join(tags)}" if tags else f"; {arch} has no pretrained tags, give a checkpoint path")
    )


def _expand(path: str) -> Path:
    """~ and ~user expanded where they name a home directory (Path.expanduser raises for an unknown user)."""
    try:
        return Path(path).expanduser()
    except (RuntimeError, ValueError):  # no such user; a NUL byte in the name
        return Path(path)


def _known_specs() -> list[str]:
    return [*shipped_models(), *(f"{a}:{t}" for a, t in open_clip.list_pretrained()), *open_clip.list_models()]


def _suggest(word: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(word, candidates, n=3, cutoff=0.6)
    return f"; did you mean {', '.join(close)}?" if close else "; `zsclip models` lists the known names"


# -- hub availability --------------------------------------------------------------------------------------
def _hf_weight_candidates(cfg: dict) -> tuple[str, list[str]] | None:
    hub = cfg.get("hf_hub", "")
    if not hub:
        return None
    repo, filename = os.path.split(hub)
    filename = filename or open_clip.pretrained.HF_WEIGHTS_NAME
    names = [*open_clip.pretrained._get_safe_alternatives(filename), filename]
    return repo, names


def cached_weights(arch: str, tag: str) -> str | None:
    """The local path of a pretrained tag's weights if they are already downloaded, else None."""
    cfg = open_clip.get_pretrained_cfg(arch, tag)
    hub = _hf_weight_candidates(cfg)
    if hub:
        from huggingface_hub import try_to_load_from_cache

        repo, names = hub
        for name in names:
            found = try_to_load_from_cache(repo, name)
            if isinstance(found, str):
                return found
        return None
    url = cfg.get("url", "")
    target = Path("~/.cache/clip").expanduser() / os.path.basename(url)
    return str(target) if url and target.is_file() else None


def _hub_reachable(timeout: float = 3.0) -> tuple[bool, str]:
    """Whether the Hugging Face endpoint answers, decided in seconds instead of minutes of retries."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False, "HF_HUB_OFFLINE is set"
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True, ""  # a proxy decides; let the download try
    url = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout):
            return True, ""
    except OSError as exc:
        return False, f"{url.hostname} cannot be reached ({exc.strerror or exc})"


@contextlib.contextmanager
def _hub_offline(offline: bool) -> Iterator[None]:
    """Make huggingface_hub use only its cache, so cached models load at once with no network."""
    from huggingface_hub import constants

    saved = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = saved or offline
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved


# -- loading -----------------------------------------------------------------------------------------------
def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device not in ("cpu", "cuda", "mps") and not device.startswith("cuda:"):
        raise UsageError(f"--device {device}: use auto, cpu, cuda, cuda:N or mps")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UsageError("--device mps: MPS is not available on this machine; use --device cpu")
    return torch.device(device)


def resolve_precision(precision: str | None, device: torch.device) -> str:
    """fp32 on CPU (bf16 autocast is several times slower there), bf16 autocast on CUDA by default."""
    if precision is None or precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if precision not in PRECISIONS:
        raise UsageError(f"--precision {precision}: use one of {', '.join(PRECISIONS)}")
    return precision


def load_model(
    spec: str | None = None,
    *,
    device: str = "auto",
    precision: str | None = None,
    cache: Cache | None = None,
) -> ClipModel:
    """Load a model by spec (default $ZSCLIP_MODEL or ViT-B-32:openai), in eval mode on `device`."""
    spec = spec or os.environ.get("ZSCLIP_MODEL") or DEFAULT_MODEL
    parsed = parse_spec(spec)
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    cache = cache or Cache()
    try:
        model, preprocess, tokenizer, metadata = _LOADERS[parsed.kind](parsed)
        fingerprint = fingerprint_spec(parsed, cache)
    except ZsclipError:
        raise
    except Exception as exc:  # open_clip and torch raise many kinds for a bad file; the user needs one line
        raise ZsclipError(f"cannot load model {spec}: {_one_line(exc)}; {_ALTERNATIVES}") from exc
    model = model.to(dev).eval()
    nhwc = _convolutional(model.visual)
    if nhwc:
        model.visual.to(memory_format=torch.channels_last)
    cache.remember_model(fingerprint, spec)
    return ClipModel(spec, parsed.arch, model, preprocess, tokenizer, fingerprint, dev, prec, metadata, nhwc)


def _convolutional(visual: torch.nn.Module) -> bool:
    """ResNet-like towers (many convolutions); a ViT has one, its patch embedding, and gains nothing from NHWC.
    Measured on the shapes model's ResNet, CPU: 1.65x faster image encoding in channels_last."""
    return sum(isinstance(m, torch.nn.Conv2d) for m in visual.modules()) > 2


def _one_line(exc: BaseException, limit: int = 300) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:limit]


def _quiet_create(*args, **kwargs):
    # open_clip logs and warns freely; the result or our own error message is what users need.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logger = logging.getLogger()
        level = logger.level
        logger.setLevel(logging.CRITICAL)
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(*args, **kwargs)
        finally:
            logger.setLevel(level)
    return model, preprocess


def _load_pretrained(parsed: ModelSpec):
    arch, tag = parsed.arch, parsed.source
    cached = cached_weights(arch, tag)
    if not cached:
        ok, why = _hub_reachable()
        if not ok:
            raise ZsclipError(
                f"cannot load model {parsed.spec}: its weights are not downloaded and {why}; {_ALTERNATIVES}"
            )
    cfg = open_clip.get_pretrained_cfg(arch, tag)
    # OpenAI's weights were trained with QuickGELU; open_clip's plain names use nn.GELU and would only warn.
    quick_gelu = bool(cfg.get("quick_gelu")) and "quickgelu" not in arch.lower()
    with _hub_offline(bool(cached)):
        try:
            model, preprocess = _quiet_create(arch, pretrained=tag, force_quick_gelu=quick_gelu)
        except RuntimeError as exc:
            if "download" not in str(exc).lower():
                raise
            raise ZsclipError(
                f"cannot load model {parsed.spec}: download failed ({_one_line(exc)}); {_ALTERNATIVES}"
            ) from exc
        tokenizer = open_clip.get_tokenizer(arch)  # SigLIP-style tokenizers come from the hub cache too
    return model, preprocess, tokenizer, {}


def _load_checkpoint(parsed: ModelSpec):
    path = Path(parsed.source)
    if not path.is_file():
        raise ZsclipError(f"cannot load model {parsed.spec}: weights file {path} does not exist; {_ALTERNATIVES}")
    try:
        model, preprocess = _quiet_create(parsed.arch, pretrained=str(path))
    except Exception as exc:  # a state dict of another architecture fails in many ways
        raise ZsclipError(
            f"cannot load model {parsed.spec}: {path} does not hold {parsed.arch} weights ({_one_line(exc)}); "
            "check the architecture name against `zsclip models`"
        ) from exc
    return model, preprocess, open_clip.get_tokenizer(parsed.arch), {}


def _load_local_dir(parsed: ModelSpec):
    directory = Path(parsed.source)
    config_path = directory / CONFIG_NAME
    if not config_path.is_file():
        raise ZsclipError(f"cannot load model {parsed.spec}: {config_path} does not exist; {_ALTERNATIVES}")
    if _local_weights(directory) is None:
        raise ZsclipError(f"cannot load model {parsed.spec}: no weights (*.safetensors, *.bin, *.pth) in {directory}")
    model, preprocess = _quiet_create(f"local-dir:{directory}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{directory}")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    return model, preprocess, tokenizer, config.get("zsclip", {})


def _load_hf_hub(parsed: ModelSpec):
    cached = _hub_config_file(parsed.source) is not None
    if not cached:
        ok, why = _hub_reachable()
        if not ok:
            raise ZsclipError(f"cannot load model {parsed.spec}: not downloaded and {why}; {_ALTERNATIVES}")
    with _hub_offline(cached):
        model, preprocess = _quiet_create(parsed.spec)
        tokenizer = open_clip.get_tokenizer(parsed.spec)
    config_file = _hub_config_file(parsed.source)
    config = json.loads(Path(config_file).read_text(encoding="utf-8")) if config_file else {}
    return model, preprocess, tokenizer, config.get("zsclip", {})


_LOADERS = {
    "pretrained": _load_pretrained,
    "checkpoint": _load_checkpoint,
    "local-dir": _load_local_dir,
    "shipped": _load_local_dir,
    "hf-hub": _load_hf_hub,
}


def _local_weights(directory: Path) -> str | None:
    found = open_clip.factory._find_checkpoint_in_dir(directory)
    return str(found) if found else None


def _hub_config_file(repo: str) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo, CONFIG_NAME)
    return found if isinstance(found, str) else None


def fingerprint_spec(spec: str | ModelSpec, cache: Cache | None = None) -> str:
    """Architecture + weights identity: the pretrained tag, a weights hash, or the hub commit.

    Computed without loading the model, so `cache clear --model` is cheap; file hashes are memoised.
    """
    parsed = spec if isinstance(spec, ModelSpec) else parse_spec(spec)
    cache = cache or Cache()
    if parsed.kind == "pretrained":
        return f"{parsed.arch}:{parsed.source}"
    if parsed.kind == "checkpoint":
        return f"{parsed.arch}@sha256:{cache.file_sha256(parsed.source)[:20]}"
    if parsed.kind == "hf-hub":
        config_file = _hub_config_file(parsed.source)
        # The snapshot folder name is the hub commit, which pins the weights.
        revision = Path(config_file).parent.name if config_file else "unknown"
        return f"hf-hub:{parsed.source}@{revision}"
    directory = Path(parsed.source)
    weights = _local_weights(directory)
    if weights is None:
        raise UsageError(f"--model {parsed.spec}: no weights in {directory}")
    config = (directory / CONFIG_NAME).read_bytes()
    digest = hashlib.sha256(config + cache.file_sha256(weights).encode()).hexdigest()
    return f"local-dir@sha256:{digest[:20]}"


# -- saving ------------------------------------------------------------------------------------------------
def save_model_dir(
    model: torch.nn.Module,
    model_cfg: dict,
    directory: str | os.PathLike,
    *,
    preprocess_cfg: dict | None = None,
    metadata: dict | None = None,
) -> Path:
    """Write open_clip's local-dir format (open_clip_config.json + open_clip_model.safetensors) plus zsclip
    metadata with the weights' sha256, loadable by `open_clip.create_model_and_transforms("local-dir:DIR")` and
    `--model DIR`. Each file is written atomically."""
    from safetensors.torch import save

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = save({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()})
    config = {"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg or {}}
    if metadata:
        config["zsclip"] = {**metadata, "weights_sha256": hashlib.sha256(weights).hexdigest()}
    atomic.write_bytes(directory / "open_clip_model.safetensors", weights)
    atomic.write_text(directory / CONFIG_NAME, json.dumps(config, indent=2) + "\n")
    return directory


def model_config(name: str) -> dict | None:
    """A model_cfg by name: zsclip's own small configs (zsclip/configs/NAME.json) or open_clip's built-ins."""
    own = resources.files("zsclip") / "configs" / f"{name}.json"
    if own.is_file():
        return json.loads(own.read_text(encoding="utf-8"))
    return open_clip.get_model_config(name)


def random_init_model(model_cfg: dict, seed: int = 0) -> torch.nn.Module:
    """An open_clip model built from a model_cfg dict with seeded random weights (tests, demos, benchmarks)."""
    cfg = json.loads(json.dumps(model_cfg))
    custom = cfg.pop("custom_text", False) or "hf_model_name" in cfg.get("text_cfg", {})
    torch.manual_seed(seed)
    return (open_clip.CustomTextCLIP if custom else open_clip.CLIP)(**cfg)


# -- listing -----------------------------------------------------------------------------------------------
def models_dir() -> Path:
    """Where `zsclip models` looks for the user's own model directories ($ZSCLIP_MODELS_DIR overrides)."""
    import platformdirs

    env = os.environ.get("ZSCLIP_MODELS_DIR")
    return Path(env).expanduser() if env else Path(platformdirs.user_data_dir("zsclip")) / "models"


def _local_model_dirs() -> list[Path]:
    found = []
    for root in (models_dir(), Path.cwd()):
        if root.is_dir():
            found += sorted(d for d in root.iterdir() if d.is_dir() and (d / CONFIG_NAME).is_file())
    return found


def _hub_cached_repos() -> list[str]:
    """open_clip repos in the Hugging Face cache (models--org--name/snapshots/<rev>/open_clip_config.json)."""
    from huggingface_hub import constants

    root = Path(constants.HF_HUB_CACHE)
    configs = root.glob(f"models--*/snapshots/*/{CONFIG_NAME}")
    found = {c.parents[2].name[len("models--") :].replace("--", "/") for c in configs}
    return sorted(found)


def list_models() -> list[dict]:
    """Every model zsclip knows: shipped, local directories, hub repos in the cache, open_clip pretrained tags."""
    rows = [{"spec": name, "source": "shipped", "available": True} for name in shipped_models()]
    rows += [{"spec": str(d), "source": "local", "available": True} for d in _local_model_dirs()]
    rows += [{"spec": f"hf-hub:{r}", "source": "hf-hub", "available": True} for r in _hub_cached_repos()]
    rows += [
        {"spec": f"{arch}:{tag}", "source": "open_clip", "available": cached_weights(arch, tag) is not None}
        for arch, tag in open_clip.list_pretrained()
    ]
    return rows
