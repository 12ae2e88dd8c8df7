"""Text -> token ids [n, context] as int64 NumPy arrays, for either kind of text tower.

CLIP's tokenizer (open_clip's SimpleTokenizer: byte-level BPE, pure Python) can run without torch: `ClipBpe` runs
open_clip's own tokenizer code, loaded from open_clip's file without importing torch or the rest of open_clip
(seconds), so text reaches an exported text tower with no torch at all. Which tokenizer a model has is recorded
when it loads (`describe`), and only after the torch-free one has given the same ids as the model's own on a
probe set; other tokenizers (SigLIP's, Hugging Face's) run through open_clip, with torch (`Wrapped`).
"""

from __future__ import annotations

import importlib.util
import sys
import threading
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

# Texts that exercise what can differ: case, spacing, punctuation, HTML entities, accents, scripts, emoji, a
# text longer than the context, an empty one.
PROBES = [
    "a photo of a cat.",
    "A PHOTO OF A  Dog ",
    "itap of the {} &amp; a <b>bold</b> word",
    "naïve café — déjà vu",
    "東京の写真",
    "a 🐱 and a 🐶!!!",
    "a photo of " + "very " * 90 + "long name.",
    "",
]
_CLEAN = {"_clean_lower": "lower", "_clean_whitespace": "whitespace", "_clean_canonicalize": "canonicalize"}
_LOCK = threading.Lock()


def _bpe_module() -> types.ModuleType:
    """open_clip/tokenizer.py as a module. Where open_clip is already imported, that module; else the file run
    on its own, with a placeholder for the `import torch` at its top (it uses torch only to return tensors,
    which ClipBpe does not call)."""
    if "open_clip.tokenizer" in sys.modules:
        return sys.modules["open_clip.tokenizer"]
    with _LOCK:
        if "zsclip._open_clip_tokenizer" in sys.modules:
            return sys.modules["zsclip._open_clip_tokenizer"]
        spec = importlib.util.find_spec("open_clip")  # finds the package without running it
        if spec is None or spec.origin is None:
            raise ImportError("open_clip is not installed")
        path = Path(spec.origin).parent / "tokenizer.py"
        file_spec = importlib.util.spec_from_file_location("zsclip._open_clip_tokenizer", path)
        module = importlib.util.module_from_spec(file_spec)
        placeholder = "torch" not in sys.modules
        if placeholder:
            sys.modules["torch"] = _Placeholder("torch")
        try:
            file_spec.loader.exec_module(module)
        finally:
            if placeholder:
                del sys.modules["torch"]
        sys.modules["zsclip._open_clip_tokenizer"] = module
        return module


class _Placeholder(types.ModuleType):
    """Stands in for torch while open_clip's tokenizer file runs: its annotations name torch types."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return object


class ClipBpe:
    """open_clip's SimpleTokenizer (its vocabulary and BPE), returning NumPy ids; no torch."""

    def __init__(self, context_length: int = 77, clean: str = "lower", bpe: Any = None):
        self.context_length, self.clean = int(context_length), clean
        # `bpe`: a SimpleTokenizer at hand with these settings (the model's own: its vocabulary is loaded)
        self._bpe = bpe or _bpe_module().SimpleTokenizer(context_length=self.context_length, clean=clean)

    def __call__(self, texts: str | Sequence[str]) -> np.ndarray:
        """As SimpleTokenizer.__call__: start, the text's ids, end; cut to the context with end kept last."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        bpe, n = self._bpe, self.context_length
        out = np.zeros((len(texts), n), dtype=np.int64)
        for i, text in enumerate(texts):
            ids = [bpe.sot_token_id, *bpe.encode(text), bpe.eot_token_id]
            if len(ids) > n:
                ids = ids[:n]
                ids[-1] = bpe.eot_token_id
            out[i, : len(ids)] = ids
        return out

    def describe(self) -> dict:
        return {"kind": "clip-bpe", "context_length": self.context_length, "clean": self.clean}


class Wrapped:
    """A tokenizer from open_clip (returns torch tensors), returning NumPy ids."""

    def __init__(self, tokenizer: Callable):
        self.tokenizer = tokenizer
        self.context_length = getattr(tokenizer, "context_length", None)

    def __call__(self, texts: str | Sequence[str]) -> np.ndarray:
        return np.asarray(self.tokenizer([texts] if isinstance(texts, str) else list(texts)).cpu().numpy(), np.int64)


def describe(tokenizer: Callable) -> dict | None:
    """How to build `tokenizer` without torch (ClipBpe's settings), or None where that would give other ids."""
    if type(tokenizer).__name__ != "SimpleTokenizer" or getattr(tokenizer, "reduction_fn", None) is not None:
        return None
    clean = _CLEAN.get(getattr(getattr(tokenizer, "clean_fn", None), "__name__", ""))
    if clean is None or getattr(tokenizer, "vocab_size", None) != 49408:  # extra special tokens: not ours to copy
        return None
    ours = ClipBpe(tokenizer.context_length, clean, bpe=tokenizer)
    if not np.array_equal(ours(PROBES), tokenizer(PROBES).numpy()):
        return None
    return ours.describe()


def from_description(description: dict) -> ClipBpe:
    if description.get("kind") != "clip-bpe":
        raise ValueError(f"unknown tokenizer kind {description.get('kind')!r}")
    return ClipBpe(description["context_length"], description["clean"])


def for_model(tokenizer: Callable) -> ClipBpe | Wrapped:
    """A model's tokenizer (from open_clip) as one that returns NumPy ids: ClipBpe where it gives the same ids."""
    if isinstance(tokenizer, ClipBpe | Wrapped):
        return tokenizer
    description = describe(tokenizer)
    if description is None:
        return Wrapped(tokenizer)
    return ClipBpe(description["context_length"], description["clean"], bpe=tokenizer)


def description_of(tokenizer: ClipBpe | Wrapped) -> dict | None:
    return tokenizer.describe() if isinstance(tokenizer, ClipBpe) else None
