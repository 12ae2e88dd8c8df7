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
import importlib.util
import json
import logging
import os
import socket
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from . import atomic
from .cache import Cache
from .defaults import DEFAULT_MODEL, PRECISIONS
from .errors import UsageError, ZsclipError

if TYPE_CHECKING:
    import torch

# open_clip and torch are imported where they are used: a run whose prompts and images are all cached needs
# neither the model nor open_clip (importing it costs seconds), see ClipModel.

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


class ClipModel:
    """A CLIP model in eval mode and everything needed to use it the way it was trained.

    The nn.Module (and the tokenizer) may be built lazily: `load_model` returns a model whose module is built on
    first use when the cache already holds what the rest of a run needs from it (logit scale, preprocessing,
    image size, metadata: `describe()`). A run whose prompts and images are all cached then never builds it, and
    never imports open_clip. `loaded` says whether it has been built.
    """

    def __init__(
        self,
        spec: str,
        arch: str,
        model: torch.nn.Module | None,
        preprocess: Callable,
        tokenizer: Callable | None,
        fingerprint: str,
        device: torch.device | None = None,
        precision: str = "fp32",
        metadata: dict | None = None,
        channels_last: bool | None = None,
        *,
        info: dict | None = None,
        loader: Callable[[], tuple] | None = None,
    ):
        if model is None and loader is None:
            raise ValueError("ClipModel needs a model or a loader")
        self.spec = spec
        self.arch = arch
        self._model = model
        self.preprocess = preprocess
        self._tokenizer = tokenizer
        self.fingerprint = fingerprint
        if device is None:
            import torch

            device = torch.device("cpu")
        self.device = device
        self.precision = precision
        self.metadata = metadata or {}
        self._channels_last = channels_last
        self._info = info or {}
        self._loader = loader
        # Where vectors are computed: "torch" runs `model`; zsclip.backends.use_backend sets "onnx" or
        # "onnx-int8" and fills `encoder` (image and text towers in ONNX Runtime), which zsclip.encode and
        # zsclip.text then call.
        self.backend = "torch"
        self.encoder: Any = None

    def __repr__(self) -> str:
        state = "loaded" if self.loaded else "not built yet"
        return f"ClipModel({self.spec!r}, {self.fingerprint}, {self.device}, {self.precision}, {state})"

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def model(self) -> torch.nn.Module:
        """The nn.Module, built (and placed on the device) on first use."""
        if self._model is None:
            self._model, _, self._tokenizer, _ = self._loader()
        return self._model

    @property
    def tokenizer(self) -> Callable:
        if self._tokenizer is None:
            self.model  # noqa: B018 -- builds both
        return self._tokenizer

    @property
    def channels_last(self) -> bool:
        """Whether images go in as NHWC: convolutional image towers run faster that way."""
        if self._channels_last is None:
            self._channels_last = _convolutional(self.model.visual)
        return self._channels_last

    @property
    def logit_scale(self) -> float:
        """The learned temperature as a multiplier, exp(t), as stored. Training clamps it at 100; inference must
        not, since models trained with another loss (SigLIP-style) learn larger scales."""
        if self._model is None and "logit_scale" in self._info:  # once built, the module is the truth
            return float(self._info["logit_scale"])
        return float(self.model.logit_scale.detach().float().exp().flatten()[0].item())

    @property
    def image_size(self) -> int | tuple[int, int]:
        size = self._info.get("image_size") if self._model is None else None
        size = size or getattr(self.model.visual, "image_size", 224)
        return tuple(size) if isinstance(size, list | tuple) else int(size)

    @property
    def preprocess_key(self) -> str:
        """Identifies the preprocessing in cache keys (a digest of the eval transform)."""
        if "preprocess_key" in self._info:
            return self._info["preprocess_key"]
        return hashlib.sha256(repr(self.preprocess).encode()).hexdigest()[:16]

    @property
    def recommended_templates(self) -> str | None:
        return self.metadata.get("templates")

    def describe(self) -> dict:
        """What a later run needs from this model besides encoding: kept in the cache by load_model."""
        import open_clip

        cfg = open_clip.get_model_preprocess_cfg(self.model)
        return {
            "logit_scale": self.logit_scale,
            "image_size": self.image_size,
            "preprocess_cfg": cfg,
            "preprocess_tuples": sorted(k for k, v in cfg.items() if isinstance(v, tuple)),  # JSON has lists only
            "preprocess_key": self.preprocess_key,
            "metadata": self.metadata,
        }

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        import torch

        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)


class LazyPreprocess:
    """open_clip's eval transform, built from its preprocessing config on first call. Pickles as the config, so
    decoding workers import open_clip only if they decode a file (not when every file is in the store)."""

    def __init__(self, cfg: dict, tuples: list[str] = ()):
        # Values open_clip had as tuples become tuples again, so the transform (and its repr) is the same.
        self.cfg = {k: tuple(v) if k in tuples and isinstance(v, list) else v for k, v in cfg.items()}
        self._transform: Callable | None = None

    @property
    def transform(self) -> Callable:
        if self._transform is None:
            from open_clip.transform import PreprocessCfg, image_transform_v2

            # The same call open_clip.create_model_and_transforms makes for its eval transform.
            self._transform = image_transform_v2(PreprocessCfg(**self.cfg), is_train=False)
        return self._transform

    @property
    def ready(self) -> bool:
        return self._transform is not None

    def prepare(self) -> None:
        """Build the transform now (it imports open_clip: seconds). Decoding calls this outside a file's time,
        so the import never counts against --file-timeout."""
        self.transform  # noqa: B018

    @property
    def transforms(self) -> list:  # what zsclip.gpu.TensorPreprocess reads off a Compose
        return self.transform.transforms

    def __call__(self, image: Any) -> Any:
        return self.transform(image)

    def __repr__(self) -> str:
        return repr(self.transform)

    def __getstate__(self) -> dict:
        return {"cfg": self.cfg}

    def __setstate__(self, state: dict) -> None:
        self.cfg = state["cfg"]
        self._transform = None


_INFO_KEYS = ("logit_scale", "image_size", "preprocess_cfg", "preprocess_key")


# -- spec resolution ---------------------------------------------------------------------------------------
def shipped_models() -> dict[str, Path]:
    """Models that ship inside the package: name -> directory in open_clip's local-dir format."""
    root = resources.files("zsclip") / "shipped"
    if not root.is_dir():
        return {}
    return {
        entry.name: Path(str(entry)) for entry in root.iterdir() if entry.is_dir() and (entry / CONFIG_NAME).is_file()
    }


def parse_spec(spec: str, cache: Cache | None = None) -> ModelSpec:
    """Resolve a spec string to what it names; unknown names are a usage error with close suggestions.

    With `cache`, an ARCH:TAG that loaded before is taken as valid without importing open_clip."""
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
    if not _is_arch(arch):
        if sep and rest and os.path.isfile(_expand(rest)):  # ARCH:/existing/file with an unknown ARCH
            raise UsageError(
                f"--model {spec}: unknown architecture {arch!r} for the checkpoint {rest}"
                f"{_suggest(arch, _open_clip_archs())}"
            )
        if os.sep in spec or path.suffix in WEIGHT_SUFFIXES:
            raise UsageError(f"--model {spec}: no such file or directory; {_ALTERNATIVES}")
        raise UsageError(f"unknown model {spec!r}{_suggest(spec, _known_specs())}")
    if not sep or not rest:
        import open_clip

        tags = open_clip.list_pretrained_tags_by_model(arch)
        hint = f"; pretrained tags: {', '.join(tags)}" if tags else ""
        raise UsageError(f"--model {spec}: give weights as {arch}:TAG or {arch}:/path/to/weights.pt{hint}")
    if os.sep in rest or rest.endswith(WEIGHT_SUFFIXES) or os.path.isfile(_expand(rest)):
        return ModelSpec(spec, "checkpoint", arch, str(_expand(rest)))
    if cache is not None and cache.model_info(f"{arch}:{rest}") is not None:  # loaded before: a known tag
        return ModelSpec(spec, "pretrained", arch, rest)
    import open_clip

    if open_clip.get_pretrained_cfg(arch, rest):
        return ModelSpec(spec, "pretrained", arch, rest)
    tags = open_clip.list_pretrained_tags_by_model(arch)
    raise UsageError(
        f"unknown pretrained tag {rest!r} for {arch}"
        + (f"; available: {', '.join(tags)}" if tags else f"; {arch} has no pretrained tags, give a checkpoint path")
    )


def _is_arch(name: str) -> bool:
    """Whether open_clip knows the architecture, read from its config folder without importing it (open_clip
    lists exactly those files), else from open_clip itself (configs added at run time)."""
    plain = bool(name) and not any(c in name for c in ("/", "\\", "\0")) and not name.startswith(".")
    found = importlib.util.find_spec("open_clip") if plain else None
    for folder in (found.submodule_search_locations or []) if found else []:
        if os.path.isfile(os.path.join(folder, "model_configs", f"{name}.json")):
            return True
    import open_clip

    return name in open_clip.list_models()


def _expand(path: str) -> Path:
    """~ and ~user expanded where they name a home directory (Path.expanduser raises for an unknown user)."""
    try:
        return Path(path).expanduser()
    except (RuntimeError, ValueError):  # no such user; a NUL byte in the name
        return Path(path)


def _known_specs() -> list[str]:
    import open_clip

    return [*shipped_models(), *(f"{a}:{t}" for a, t in open_clip.list_pretrained()), *open_clip.list_models()]


def _open_clip_archs() -> list[str]:
    import open_clip

    return open_clip.list_models()


def _suggest(word: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(word, candidates, n=3, cutoff=0.6)
    return f"; did you mean {', '.join(close)}?" if close else "; `zsclip models` lists the known names"


# -- hub availability --------------------------------------------------------------------------------------
def _hf_weight_candidates(cfg: dict) -> tuple[str, list[str]] | None:
    import open_clip

    hub = cfg.get("hf_hub", "")
    if not hub:
        return None
    repo, filename = os.path.split(hub)
    filename = filename or open_clip.pretrained.HF_WEIGHTS_NAME
    names = [*open_clip.pretrained._get_safe_alternatives(filename), filename]
    return repo, names


def cached_weights(arch: str, tag: str) -> str | None:
    """The local path of a pretrained tag's weights if they are already downloaded, else None."""
    import open_clip

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
    import torch

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
    lazy: bool = True,
) -> ClipModel:
    """Load a model by spec (default $ZSCLIP_MODEL or ViT-B-32:openai), in eval mode on `device`.

    When the cache knows these weights (from an earlier load) and `lazy`, the module is built on first use only
    (see ClipModel): a run that finds all its prompts and images cached never builds it."""
    spec = spec or os.environ.get("ZSCLIP_MODEL") or DEFAULT_MODEL
    cache = cache or Cache()
    parsed = parse_spec(spec, cache)
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    _check_files(parsed)
    try:
        fingerprint = fingerprint_spec(parsed, cache)
    except ZsclipError:
        raise
    except Exception as exc:  # an unreadable weights file, a broken hub cache
        raise ZsclipError(f"cannot load model {spec}: {_one_line(exc)}; {_ALTERNATIVES}") from exc
    info = cache.model_info(fingerprint) if lazy else None
    if info is not None and all(k in info for k in _INFO_KEYS):
        cache.remember_model(fingerprint, spec)
        preprocess = LazyPreprocess(info["preprocess_cfg"], info.get("preprocess_tuples", []))
        return ClipModel(
            spec, parsed.arch, None, preprocess, None, fingerprint, dev, prec, info.get("metadata") or {},
            info=info, loader=lambda: _build(parsed, dev),
        )  # fmt: skip
    model, preprocess, tokenizer, metadata = _build(parsed, dev)
    clip = ClipModel(spec, parsed.arch, model, preprocess, tokenizer, fingerprint, dev, prec, metadata)
    cache.remember_model(fingerprint, spec, clip.describe())
    return clip


def _check_files(parsed: ModelSpec) -> None:
    """The files a local spec names are there (before they are hashed for the fingerprint)."""
    if parsed.kind == "checkpoint" and not Path(parsed.source).is_file():
        raise ZsclipError(
            f"cannot load model {parsed.spec}: weights file {parsed.source} does not exist; {_ALTERNATIVES}"
        )
    if parsed.kind in ("local-dir", "shipped"):
        directory = Path(parsed.source)
        if not (directory / CONFIG_NAME).is_file():
            raise ZsclipError(
                f"cannot load model {parsed.spec}: {directory / CONFIG_NAME} does not exist; {_ALTERNATIVES}"
            )
        if _local_weights(directory) is None:
            raise ZsclipError(
                f"cannot load model {parsed.spec}: no weights (*.safetensors, *.bin, *.pth) in {directory}"
            )


def _build(parsed: ModelSpec, dev: torch.device) -> tuple:
    """(module on `dev` in eval mode, preprocess, tokenizer, metadata); every failure is one ZsclipError line."""
    import torch

    try:
        model, preprocess, tokenizer, metadata = _LOADERS[parsed.kind](parsed)
    except ZsclipError:
        raise
    except Exception as exc:  # open_clip and torch raise many kinds for a bad file; the user needs one line
        raise ZsclipError(f"cannot load model {parsed.spec}: {_one_line(exc)}; {_ALTERNATIVES}") from exc
    model = model.to(dev).eval()
    if _convolutional(model.visual):
        model.visual.to(memory_format=torch.channels_last)
    return model, preprocess, tokenizer, metadata


def _convolutional(visual: torch.nn.Module) -> bool:
    """ResNet-like towers (many convolutions); a ViT has one, its patch embedding, and gains nothing from NHWC.
    Measured on the shapes model's ResNet, CPU: 1.65x faster image encoding in channels_last."""
    import torch

    return sum(isinstance(m, torch.nn.Conv2d) for m in visual.modules()) > 2


def _one_line(exc: BaseException, limit: int = 300) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:limit]


_INIT_FUNCTIONS = (
    "uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "eye_", "dirac_", "xavier_uniform_",
    "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_", "sparse_",
)  # fmt: skip


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


def _quickgelu_name(arch: str, tag: str) -> str:
    """The architecture name that, given the tag's weights file, builds the tag's model: OpenAI-trained weights
    (and others open_clip marks quick_gelu) need the -quickgelu variant, the plain name uses nn.GELU."""
    import open_clip

    cfg = open_clip.get_pretrained_cfg(arch, tag) or {}
    if cfg.get("quick_gelu") and "quickgelu" not in arch.lower() and f"{arch}-quickgelu" in open_clip.list_models():
        return f"{arch}-quickgelu"
    return arch


def _load_pretrained(parsed: ModelSpec):
    import open_clip

    arch, tag = parsed.arch, parsed.source
    cached = cached_weights(arch, tag)
    if not cached:
        ok, why = _hub_reachable()
        if not ok:
            raise ZsclipError(
                f"cannot load model {parsed.spec}: its weights are not downloaded and {why}; with the weights file "
                f"at hand use --model {_quickgelu_name(arch, tag)}:/path/to/weights (the same model), or a model "
                "directory (--model /path/to/dir), or set ZSCLIP_MODEL"
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


def _checkpoint_arch(parsed: ModelSpec) -> str:
    """The architecture a checkpoint is built as: what ARCH names, except for a pretrained tag's own downloaded
    file, which builds the tag's model (QuickGELU for OpenAI weights). Any other file cannot be told apart:
    ViT-B-32 has GELU-trained tags as well, so QuickGELU cannot be assumed. open_clip is imported only for a file
    inside a download cache, so a cached run on a checkpoint elsewhere never imports it."""
    from huggingface_hub import constants

    real = os.path.realpath(parsed.source)
    roots = (constants.HF_HUB_CACHE, Path("~/.cache/clip").expanduser())
    caches = [f(c) + os.sep for c in roots for f in (os.path.realpath, os.path.abspath)]
    named = os.path.abspath(parsed.source)  # a snapshot link, or the blob it points to
    if not any(p.startswith(c) for p in (real, named) for c in caches):
        return parsed.arch
    import open_clip

    for tag in open_clip.list_pretrained_tags_by_model(parsed.arch):
        with contextlib.suppress(Exception):  # a tag without a hub entry or an odd cache is simply not this file
            found = cached_weights(parsed.arch, tag)
            if found and os.path.realpath(found) == real:
                return _quickgelu_name(parsed.arch, tag)
    return parsed.arch


def _load_checkpoint(parsed: ModelSpec):
    import open_clip

    path = Path(parsed.source)
    try:
        model, preprocess = _quiet_create(_checkpoint_arch(parsed), pretrained=str(path))
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


_CHECKPOINT_ORDER = (
    "open_clip_model.safetensors", "open_clip_pytorch_model.safetensors", "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth", "model.safetensors", "pytorch_model.bin", "pytorch_model.pth", "model.pth",
)  # fmt: skip


def _local_weights(directory: Path) -> str | None:
    """The weights file open_clip loads from a model directory: its factory._find_checkpoint_in_dir rule, which
    cannot be imported without importing open_clip (seconds), needed here for the fingerprint only."""
    found = [*directory.glob("*.safetensors"), *directory.glob("*.bin"), *directory.glob("*.pth")]
    if not found:
        return None
    found.sort()
    found.sort(key=lambda p: p.suffix == ".safetensors", reverse=True)
    preferred = sorted((p for p in found if p.name in _CHECKPOINT_ORDER), key=lambda p: _CHECKPOINT_ORDER.index(p.name))
    return str(preferred[0] if preferred else found[0])


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
    if parsed.kind == "checkpoint":  # the built architecture: the same file may build with QuickGELU or not
        return f"{_checkpoint_arch(parsed)}@sha256:{cache.file_sha256(parsed.source)[:20]}"
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
    import open_clip

    return open_clip.get_model_config(name)


def random_init_model(model_cfg: dict, seed: int = 0) -> torch.nn.Module:
    """An open_clip model built from a model_cfg dict with seeded random weights (tests, demos, benchmarks)."""
    import open_clip
    import torch

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
    import open_clip

    rows = [{"spec": name, "source": "shipped", "available": True} for name in shipped_models()]
    rows += [{"spec": str(d), "source": "local", "available": True} for d in _local_model_dirs()]
    rows += [{"spec": f"hf-hub:{r}", "source": "hf-hub", "available": True} for r in _hub_cached_repos()]
    rows += [
        {"spec": f"{arch}:{tag}", "source": "open_clip", "available": cached_weights(arch, tag) is not None}
        for arch, tag in open_clip.list_pretrained()
    ]
    return rows


def vector_key(model: ClipModel) -> str:
    """What, besides the weights, a cached vector depends on: the precision and, off torch, the backend. Torch keeps
    the bare precision so caches written before backends existed stay valid."""
    backend = getattr(model, "backend", "torch")
    return model.precision if backend == "torch" else f"{model.precision}+{backend}"
