"""Model specs -> loaded open_clip models with their preprocessing, tokenizer, logit scale and fingerprint.

One module each: `spec` (what a spec names), `hub` (downloaded weights, the hub's reachability), `clip` (the
ClipModel), `loading` (load_model), `fingerprint` (what identifies weights), `files` (model directories,
configs, the list of models). open_clip and torch are imported where they are used: a run whose prompts and
images are all cached needs neither the module nor open_clip (importing it costs seconds), see ClipModel."""

from zsclip.models.clip import ClipModel
from zsclip.models.files import list_models, model_config, models_dir, random_init_model, save_model_dir
from zsclip.models.fingerprint import fingerprint_spec, vector_key, vector_key_for
from zsclip.models.hub import cached_weights
from zsclip.models.loading import load_model, resolve_device, resolve_precision
from zsclip.models.spec import CONFIG_NAME, WEIGHT_SUFFIXES, ModelSpec, parse_spec, shipped_models

__all__ = [
    "CONFIG_NAME",
    "WEIGHT_SUFFIXES",
    "ClipModel",
    "ModelSpec",
    "cached_weights",
    "fingerprint_spec",
    "list_models",
    "load_model",
    "model_config",
    "models_dir",
    "parse_spec",
    "random_init_model",
    "resolve_device",
    "resolve_precision",
    "save_model_dir",
    "shipped_models",
    "vector_key",
    "vector_key_for",
]
