"""zsclip: zero-shot image classification with CLIP.

model = zsclip.load_model("ViT-B-32:openai")                  # or a path, hf-hub:..., a shipped name
clf = zsclip.build_classifier(model, ["cat", "dog"])         # cached text embeddings, prompt ensemble
for record in zsclip.classify(model, clf, "photos/"):         # streams Prediction / Skipped records
    print(record.to_dict())
zsclip.index(model, "photos/")                                # the image-embedding store, incremental
for hit in zsclip.search(model, "a dog on a beach", "photos/"):   # Hit(rank, path, score), best first
    print(hit.to_dict())
"""

__version__ = "0.1.0"

from .cache import Cache, cache_dir
from .classify import Prediction, Skipped, classify, probabilities
from .errors import UsageError, ZsclipError
from .evaluate import evaluate
from .models import ClipModel, list_models, load_model, parse_spec
from .prompts import TemplateSet, list_template_sets, load_templates, parse_classes, read_classes_file
from .retrieval import Hit, IndexResult, index, search
from .text import Classifier, build_classifier

__all__ = [
    "Cache",
    "Classifier",
    "ClipModel",
    "Hit",
    "IndexResult",
    "Prediction",
    "Skipped",
    "TemplateSet",
    "UsageError",
    "ZsclipError",
    "__version__",
    "build_classifier",
    "cache_dir",
    "classify",
    "evaluate",
    "index",
    "list_models",
    "list_template_sets",
    "load_model",
    "load_templates",
    "parse_classes",
    "parse_spec",
    "probabilities",
    "read_classes_file",
    "search",
]
