"""The loaded model: ClipModel (module, preprocessing, tokenizer, logit scale, fingerprint; built lazily when the
cache knows what a run needs of it)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from zsclip.models.tokenizer import description_of, for_model, from_description

if TYPE_CHECKING:
    import torch

    from zsclip.models.encoder import Encoder
from zsclip.models.preprocess import Preprocess


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
        preprocess: Preprocess,
        tokenizer: Callable | None,
        fingerprint: str,
        device: str | torch.device = "cpu",
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
        self._tokenizer = for_model(tokenizer) if tokenizer is not None else None
        self.fingerprint = fingerprint
        self.device_name = str(device)  # "cpu", "cuda:1": known without importing torch
        self.precision = precision
        self.metadata = metadata or {}
        self._channels_last = channels_last
        self._info = info or {}
        self._loader = loader
        # Where vectors are computed: zsclip.backends.use_backend sets the backend's name and its Encoder
        # (zsclip.backends.ENCODERS), which zsclip.pipeline.encode and zsclip.zeroshot.classifier call; None (a
        # model loaded without a backend) runs the torch module (zsclip.models.encoder.encoder_of).
        self.backend = "torch"
        self.encoder: Encoder | None = None

    def __repr__(self) -> str:
        state = "loaded" if self.loaded else "not built yet"
        return f"ClipModel({self.spec!r}, {self.fingerprint}, {self.device_name}, {self.precision}, {state})"

    @property
    def device(self) -> torch.device:
        import torch

        return torch.device(self.device_name)

    @property
    def device_type(self) -> str:
        """ "cpu", "cuda" or "mps" (no torch needed)."""
        return self.device_name.split(":")[0]

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def model(self) -> torch.nn.Module:
        """The nn.Module, built (and placed on the device) on first use."""
        if self._model is None:
            self._model, _, tokenizer, _ = self._loader()
            self._tokenizer = self._tokenizer or for_model(tokenizer)
        return self._model

    @property
    def tokenizer(self) -> Callable:
        """Texts -> int64 token ids [n, context] (NumPy). Without torch where the cache recorded a tokenizer that
        runs without it (zsclip.models.tokenizer)."""
        if self._tokenizer is None:
            described = self._info.get("tokenizer")
            if described and self._model is None:
                self._tokenizer = from_description(described)
            else:
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
        """The model input's side (or (height, width)), as its preprocessing makes it."""
        return self.preprocess.image_size

    @property
    def preprocess_key(self) -> str:
        """Identifies the preprocessing in cache keys."""
        return self.preprocess.key

    @property
    def recommended_templates(self) -> str | None:
        return self.metadata.get("templates")

    def describe(self) -> dict:
        """What a later run needs from this model besides encoding: kept in the cache by load_model."""
        return {
            "logit_scale": self.logit_scale,
            "image_size": self.image_size,
            "preprocess_cfg": self.preprocess.to_json(),
            "tokenizer": description_of(self.tokenizer),
            "metadata": self.metadata,
        }

    def computed_by(self) -> dict:
        """What a reported number was computed with: model, weights, backend and precision (metrics.json, grids)."""
        return {
            "model": self.spec,
            "fingerprint": self.fingerprint,
            "backend": self.backend,
            "precision": self.precision,
        }

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        import torch

        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device_type, dtype=dtype)


INFO_KEYS = ("logit_scale", "image_size", "preprocess_cfg", "tokenizer")


def convolutional(visual: torch.nn.Module) -> bool:
    """ResNet-like towers (many convolutions); a ViT has one, its patch embedding, and gains nothing from NHWC.
    Measured on the shapes model's ResNet, CPU: 1.65x faster image encoding in channels_last."""
    import torch

    return sum(isinstance(m, torch.nn.Conv2d) for m in visual.modules()) > 2
