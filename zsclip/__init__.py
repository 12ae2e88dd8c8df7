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
import importlib.abc
import importlib.util
import sys
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "Cache": "store.cache",
    "cache_dir": "store.cache",
    "Prediction": "classify.predict",
    "Skipped": "classify.predict",
    "classify": "classify",  # the package, callable as the function (zsclip.core.modules)
    "probabilities": "classify.predict",
    "UsageError": "core.errors",
    "ZsclipError": "core.errors",
    "ClipModel": "models",
    "list_models": "models",
    "load_model": "backends",  # the model switched to its backend: the one decision (zsclip.backends)
    "parse_spec": "models",
    "TemplateSet": "zeroshot.prompts",
    "list_template_sets": "zeroshot.prompts",
    "load_templates": "zeroshot.prompts",
    "parse_classes": "zeroshot.prompts",
    "read_classes_file": "zeroshot.prompts",
    "Classifier": "zeroshot.classifier",
    "build_classifier": "zeroshot.classifier",
    "EvalResult": "evaluate.run",
    "evaluate": "evaluate",  # the package, callable as the function
    "compare_templates": "evaluate.run",
    "EvalDataset": "datasets",
    "load_dataset": "datasets",
    "LocateResult": "video.locate",
    "Segment": "video.locate",
    "locate": "video.locate",
    "Hit": "retrieval.search",
    "IndexResult": "retrieval.search",
    "index": "retrieval.search",
    "search": "retrieval.search",
}
# public submodules under their short names
_SUBMODULES = {"report": "evaluate.report"}

__all__ = sorted([*_EXPORTS, *_SUBMODULES, "__version__"])


def __getattr__(name: str):
    if name in _EXPORTS:
        module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
        value = module if _EXPORTS[name] == name else getattr(module, name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"{__name__}.{_SUBMODULES[name]}")
    else:
        raise AttributeError(f"module 'zsclip' has no attribute {name!r}")
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return __all__


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """`import zsclip.report` (a documented submodule) finds the module where it lives now (zsclip.evaluate.report)."""

    def find_spec(self, fullname, path=None, target=None):
        short = fullname.removeprefix(f"{__name__}.")
        if fullname.startswith(f"{__name__}.") and short in _SUBMODULES:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return importlib.import_module(f"{__name__}.{_SUBMODULES[spec.name.removeprefix(f'{__name__}.')]}")

    def exec_module(self, module) -> None:
        return None


sys.meta_path.append(_Alias())


if TYPE_CHECKING:
    from zsclip import classify, evaluate
    from zsclip.backends import load_model
    from zsclip.classify.predict import Prediction, Skipped, probabilities
    from zsclip.core.errors import UsageError, ZsclipError
    from zsclip.datasets import EvalDataset, load_dataset
    from zsclip.evaluate import report
    from zsclip.evaluate.run import EvalResult, compare_templates
    from zsclip.models import ClipModel, list_models, parse_spec
    from zsclip.retrieval.search import Hit, IndexResult, index, search
    from zsclip.store.cache import Cache, cache_dir
    from zsclip.video.locate import LocateResult, Segment, locate
    from zsclip.zeroshot.classifier import Classifier, build_classifier
    from zsclip.zeroshot.prompts import (
        TemplateSet,
        list_template_sets,
        load_templates,
        parse_classes,
        read_classes_file,
    )
