"""What computes a model's vectors: the Encoder protocol, and the torch module as one (TorchEncoder).

Every backend is an Encoder (zsclip.backends.ENCODERS names them: torch, onnx, onnx-int8), so the stages above
(zsclip.pipeline.encode for images, zsclip.zeroshot.classifier for prompts) never ask which one runs. The text
tower helpers live here too: how a CLIP text tower pools, and its forward pass run only as far as a prompt needs
(what the ONNX export records and traces, zsclip.backends.onnx_export).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    import torch

# The model these encoders serve is a zsclip.models.clip.ClipModel, which itself holds an Encoder: typed Any here
# so the two modules do not import each other.
ClipModel = Any


class Encoder(Protocol):
    """A model's two towers, NumPy in and out."""

    name: str  # the backend: "torch", "onnx" or "onnx-int8"
    image: str  # the image tower's variant: "fp32", or "int8" (its labels settled by zsclip.classify.recheck)

    def encode_images(self, pixels: Any) -> np.ndarray:
        """Unit-norm float32 embeddings [n, dim] of uint8 pixels [n, h, w, 3] (or, for torch, a float tensor
        already normalised)."""
        ...

    def text_positions(self, tokens: np.ndarray) -> np.ndarray | None:
        """Per prompt, the position the text tower pools at, where running only up to it gives the same vector;
        None: run every position."""
        ...

    def encode_text(self, tokens: np.ndarray, positions: np.ndarray | None) -> np.ndarray:
        """Raw float32 text embeddings [n, dim] of token ids [n, context] (cut to `positions` where given)."""
        ...


class TorchEncoder:
    """The PyTorch module itself, on the model's device and precision (the model is built on first use)."""

    name = "torch"
    image = "fp32"

    def __init__(self, model: ClipModel):
        self.model = model

    def encode_images(self, pixels: Any) -> np.ndarray:
        import torch  # heavy: only where the torch module runs

        with torch.inference_mode():
            return _encode_torch(self.model, pixels)

    def text_positions(self, tokens: np.ndarray) -> np.ndarray | None:
        return pool_positions(self.model.model, tokens)

    def encode_text(self, tokens: np.ndarray, positions: np.ndarray | None) -> np.ndarray:
        return _encode_text_torch(self.model, tokens, positions)


def encoder_of(model: ClipModel) -> Encoder:
    """The encoder zsclip.backends gave `model`; a model loaded without a backend runs its torch module."""
    return model.encoder if model.encoder is not None else TorchEncoder(model)


def _encode_torch(model: ClipModel, pixels: Any) -> np.ndarray:
    import torch  # heavy: only where the torch module runs

    if isinstance(pixels, np.ndarray):
        if model.device_type == "cpu":
            pixels = torch.from_numpy(model.preprocess.normalize(pixels))
        else:  # a quarter of the bytes cross to the device; normalised there with the same float32 operations
            pixels = _normalize_on(model, torch.from_numpy(pixels).pin_memory().to(model.device, non_blocking=True))
    elif pixels.device != model.device:
        pixels = (pixels.pin_memory() if model.device_type == "cuda" else pixels).to(model.device, non_blocking=True)
    if model.channels_last:
        pixels = pixels.contiguous(memory_format=torch.channels_last)
    with model.autocast():
        features = model.model.encode_image(pixels)
    return torch.nn.functional.normalize(features.float(), dim=-1).cpu().numpy()


def _normalize_on(model: ClipModel, pixels):
    """uint8 [n, h, w, 3] on the device -> normalised float32 [n, 3, h, w]: ToTensor's /255 and Normalize."""
    import torch

    mean = torch.tensor(model.preprocess.mean, dtype=torch.float32, device=pixels.device)[:, None, None]
    std = torch.tensor(model.preprocess.std, dtype=torch.float32, device=pixels.device)[:, None, None]
    return (pixels.permute(0, 3, 1, 2).float() / 255 - mean) / std


def pool_positions(model: torch.nn.Module, tokens: np.ndarray) -> np.ndarray | None:
    """Per prompt, the position the text tower pools at, when running only up to it gives the same vector."""
    return pooled_at(pool_of(model), tokens)


def pool_of(model: torch.nn.Module) -> dict | None:
    """How the text tower pools, as pooled_at reads it (recorded with an export), when running a prompt only up
    to that position gives the same vector: open_clip's CLIP text tower with a causal mask (no position attends to
    a later one) pooling at the end-of-text token (argmax/eos) or the first token. SigLIP-style towers (no causal
    mask, 'last' pooling over padding) and HF or custom text towers: None, and the plain `encode_text` path."""
    import open_clip  # heavy: only for a torch module

    if type(model) is not open_clip.CLIP or getattr(model, "attn_mask", None) is None:
        return None
    pool = {"kind": getattr(model, "text_pool_type", "argmax"), "eos_id": getattr(model, "text_eos_id", None)}
    return pool if pooled_at(pool, np.zeros((1, 2), dtype=np.int64)) is not None else None


def pooled_at(pool: dict | None, tokens: np.ndarray) -> np.ndarray | None:
    """Per prompt, the position a text tower pooling as `pool` says reads its output at; None: all of them."""
    if pool is None:
        return None
    if pool["kind"] == "argmax":  # CLIP's end-of-text id is the largest id
        return tokens.argmax(axis=-1)
    if pool["kind"] == "eos" and pool.get("eos_id") is not None:
        return (tokens == pool["eos_id"]).argmax(axis=-1)
    if pool["kind"] == "first":
        return np.zeros(len(tokens), dtype=np.int64)
    return None


def _encode_trimmed(model: torch.nn.Module, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """open_clip's CLIP.encode_text, run only up to the batch's last pooled position."""
    return trimmed_forward(model, tokens[:, : int(positions.max()) + 1], positions)


def trimmed_forward(model: torch.nn.Module, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """CLIP.encode_text on tokens already cut to the length they need (also what zsclip.backends exports, with
    that length as a dynamic axis)."""
    import torch  # heavy: only for a torch module

    length = tokens.shape[1]
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast_dtype)
    x = x + model.positional_embedding[:length].to(cast_dtype)
    x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])
    x = model.ln_final(x)
    x = x[torch.arange(x.shape[0], device=x.device), positions]
    if model.text_projection is not None:
        x = (
            model.text_projection(x)
            if isinstance(model.text_projection, torch.nn.Linear)
            else x @ model.text_projection
        )
    return x


def _encode_text_torch(model: ClipModel, tokens: np.ndarray, positions: np.ndarray | None) -> np.ndarray:
    import torch  # heavy: only for a torch module

    with torch.inference_mode(), model.autocast():
        batch = torch.from_numpy(tokens).to(model.device)
        if positions is None:
            features = model.model.encode_text(batch)
        else:
            features = _encode_trimmed(model.model, batch, torch.from_numpy(positions).to(model.device))
    return features.float().cpu().numpy()
