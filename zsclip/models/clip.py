"""The loaded model: ClipModel (module, preprocessing, tokenizer, logit scale, fingerprint; built lazily when the
cache knows what a run needs of it) and LazyPreprocess (open_clip's eval transform, built on first call)."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


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
            _ = self.model  # builds both
        return self._tokenizer

    @property
    def channels_last(self) -> bool:
        """Whether images go in as NHWC: convolutional image towers run faster that way."""
        if self._channels_last is None:
            self._channels_last = convolutional(self.model.visual)
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
        _ = self.transform

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


INFO_KEYS = ("logit_scale", "image_size", "preprocess_cfg", "preprocess_key")


def convolutional(visual: torch.nn.Module) -> bool:
    """ResNet-like towers (many convolutions); a ViT has one, its patch embedding, and gains nothing from NHWC.
    Measured on the shapes model's ResNet, CPU: 1.65x faster image encoding in channels_last."""
    import torch

    return sum(isinstance(m, torch.nn.Conv2d) for m in visual.modules()) > 2
