"""zsclip: zero-shot image classification with CLIP.

model = zsclip.load_model("ViT-B-32:openai")                  # or a path, hf-hub:..., a shipped name
clf = zsclip.build_classifier(model, ["cat", "dog"])         # cached text embeddings, prompt ensemble
for record in zsclip.classify(model, clf, "photos/"):         # streams Prediction / Skipped records
    print(record.to_dict())
zsclip.index(model, "photos/")                                # the image-embedding store, incremental
for hit in zsclip.search(model, "a dog on a beach", "photos/"):   # Hit(rank, path, score), best first
    print(hit.to_dict())

Names are loaded on first use (PEP 562), so `import zsclip` and the CLI's `--help` do not pay for torch.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "Cache": "cache",
    "cache_dir": "cache",
    "Prediction": "classify",
    "Skipped": "classify",
    "classify": "classify",
    "probabilities": "classify",
    "UsageError": "errors",
    "ZsclipError": "errors",
    "ClipModel": "models",
    "list_models": "models",
    "load_model": "backends",  # the model switched to its backend: the one decision (zsclip.backends)
    "parse_spec": "models",
    "TemplateSet": "prompts",
    "list_template_sets": "prompts",
    "load_templates": "prompts",
    "parse_classes": "prompts",
    "read_classes_file": "prompts",
    "Classifier": "text",
    "build_classifier": "text",
    "EvalResult": "evaluate",
    "evaluate": "evaluate",
    "compare_templates": "evaluate",
    "EvalDataset": "datasets",
    "load_dataset": "datasets",
    "LocateResult": "locate",
    "Segment": "locate",
    "locate": "locate",
    "Hit": "retrieval",
    "IndexResult": "retrieval",
    "index": "retrieval",
    "search": "retrieval",
}
_SUBMODULES = ("report",)

__all__ = sorted([*_EXPORTS, *_SUBMODULES, "__version__"])


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'zsclip' has no attribute {name!r}")
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return __all__


class _Package(types.ModuleType):
    """`zsclip.classify`, `zsclip.evaluate` and `zsclip.locate` are functions that share their module's name:
    importing the submodule must not replace the function on the package (as the import system does by default)."""

    def __setattr__(self, name: str, value) -> None:
        if isinstance(value, types.ModuleType) and _EXPORTS.get(name) == name:
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


if TYPE_CHECKING:
    from . import report
    from .backends import load_model
    from .cache import Cache, cache_dir
    from .classify import Prediction, Skipped, classify, probabilities
    from .datasets import EvalDataset, load_dataset
    from .errors import UsageError, ZsclipError
    from .evaluate import EvalResult, compare_templates, evaluate
    from .locate import LocateResult, Segment, locate
    from .models import ClipModel, list_models, parse_spec
    from .prompts import TemplateSet, list_template_sets, load_templates, parse_classes, read_classes_file
    from .retrieval import Hit, IndexResult, index, search
    from .text import Classifier, build_classifier
