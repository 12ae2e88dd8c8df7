"""A model's towers exported from torch to ONNX files: the image tower (a dynamic batch axis), the text tower (also
a dynamic sequence axis where it can run trimmed, zsclip.models.encoder.pool_of), written atomically. The only
module here
that imports torch."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch

from zsclip.core import atomic
from zsclip.core.errors import ZsclipError
from zsclip.models.encoder import pool_of, pooled_at, trimmed_forward

OPSET = 17


def export_tower(module, tower: str, path: Path) -> dict | None:
    """Export one tower of an open_clip model to `path` (atomically). Returns the text tower's pooling, or None."""
    import io

    pool = None  # how the text tower pools (zsclip.models.encoder.pool_of), where it runs trimmed
    if tower == "image":
        size = getattr(module.visual, "image_size", 224)
        h, w = size if isinstance(size, tuple | list) else (size, size)
        wrapper, args = _ImageTower(module), (torch.randn(3, 3, int(h), int(w)),)
        names, axes = ["pixels"], {"pixels": {0: "batch"}, "features": {0: "batch"}}
    else:
        tokens = torch.randint(1, 1000, (3, 7))
        tokens[:, -1] = 49407  # CLIP's end-of-text id is the largest id, where argmax pooling looks
        pool = pool_of(module)
        positions = pooled_at(pool, tokens.numpy())
        if positions is not None:
            wrapper, args = _TrimmedTextTower(module), (tokens, torch.from_numpy(positions))
            names = ["tokens", "positions"]
            axes = {"tokens": {0: "batch", 1: "sequence"}, "positions": {0: "batch"}, "features": {0: "batch"}}
        else:
            context = int(getattr(module, "context_length", 77))
            wrapper, args = _TextTower(module), (torch.randint(1, 1000, (3, context)),)
            names, axes = ["tokens"], {"tokens": {0: "batch"}, "features": {0: "batch"}}
    buffer = io.BytesIO()
    try:
        with torch.inference_mode(False), torch.no_grad(), _plain_attention(module), quiet():
            torch.onnx.export(
                wrapper.eval(),
                args,
                buffer,
                input_names=names,
                output_names=["features"],
                dynamic_axes=axes,
                opset_version=OPSET,
                dynamo=False,
                do_constant_folding=True,
            )
    except Exception as exc:  # the exporter raises many kinds for an unsupported layer
        raise ZsclipError(
            f"cannot export the {tower} tower to ONNX ({type(exc).__name__}: {' '.join(str(exc).split())[:200]}); "
            "use --backend torch"
        ) from exc
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_bytes(path, buffer.getvalue())
    return pool


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """The exporter and the quantizer warn and log freely; the user needs our one-line progress."""
    import logging
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)
        try:
            yield
        finally:
            root.setLevel(level)


class _ImageTower(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixels):
        return self.model.encode_image(pixels)


class _TextTower(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, tokens):
        return self.model.encode_text(tokens)


class _TrimmedTextTower(torch.nn.Module):
    """zsclip.zeroshot.classifier's trimmed CLIP text forward, with the sequence length taken from the input (a dynamic
    axis)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, tokens, positions):

        return trimmed_forward(self.model, tokens, positions)


class _PlainAttention(torch.nn.Module):
    """nn.MultiheadAttention as open_clip uses it (self-attention), in plain tensor operations: the TorchScript
    exporter freezes the batch and sequence sizes of the fused version into its reshapes."""

    def __init__(self, mha: torch.nn.MultiheadAttention):
        super().__init__()
        self.mha = mha
        self.heads = mha.num_heads
        self.head_dim = mha.embed_dim // mha.num_heads

    def forward(self, query, key=None, value=None, need_weights=False, attn_mask=None, **kwargs):
        mha = self.mha
        if (key is not None and key is not query) or (value is not None and value is not query):
            return mha(query, key, value, need_weights=need_weights, attn_mask=attn_mask, **kwargs)  # cross-attention
        x = query if mha.batch_first else query.transpose(0, 1)
        qkv = torch.nn.functional.linear(x, mha.in_proj_weight, mha.in_proj_bias)
        q, k, v = qkv.unflatten(-1, (3, self.heads, self.head_dim)).transpose(1, 3).unbind(2)  # [B, H, L, d]
        scores = (q * self.head_dim**-0.5) @ k.transpose(-1, -2)
        if attn_mask is not None:
            if attn_mask.dtype == torch.bool:
                attn_mask = torch.zeros_like(attn_mask, dtype=scores.dtype).masked_fill(attn_mask, float("-inf"))
            scores = scores + attn_mask
        out = mha.out_proj((scores.softmax(dim=-1) @ v).transpose(1, 2).flatten(2))
        return (out if mha.batch_first else out.transpose(0, 1)), None


@contextlib.contextmanager
def _plain_attention(module) -> Iterator[None]:
    """Swap every self-attention nn.MultiheadAttention of `module` for PlainAttention during the export."""
    swapped = []
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.MultiheadAttention) and child._qkv_same_embed_dim:
                setattr(parent, name, _PlainAttention(child))
                swapped.append((parent, name, child))
    try:
        yield
    finally:
        for parent, name, child in swapped:
            setattr(parent, name, child)
