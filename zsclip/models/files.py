"""Model directories on disk: open_clip's local-dir format (read and written), model configs by name, random-init
models for tests and benchmarks, and the list of every model zsclip can load."""

from __future__ import annotations

import hashlib
import json
import os
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from zsclip.core import atomic
from zsclip.models.hub import cached_weights
from zsclip.models.spec import CONFIG_NAME, shipped_models

if TYPE_CHECKING:
    import torch


_CHECKPOINT_ORDER = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth",
    "model.safetensors",
    "pytorch_model.bin",
    "pytorch_model.pth",
    "model.pth",
)


def local_weights(directory: Path) -> str | None:
    """The weights file open_clip loads from a model directory: its factory._find_checkpoint_in_dir rule, which
    cannot be imported without importing open_clip (seconds), needed here for the fingerprint only."""
    found = [*directory.glob("*.safetensors"), *directory.glob("*.bin"), *directory.glob("*.pth")]
    if not found:
        return None
    found.sort()
    found.sort(key=lambda p: p.suffix == ".safetensors", reverse=True)
    preferred = sorted((p for p in found if p.name in _CHECKPOINT_ORDER), key=lambda p: _CHECKPOINT_ORDER.index(p.name))
    return str(preferred[0] if preferred else found[0])


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
    """Every model zsclip knows: shipped, local directories, hub repos in the cache, open_clip pretrained tags.

    Returns:
        One dict per model: `spec` (what load_model takes), `source` (shipped, local, hf-hub, open_clip) and
        `available` (whether its weights are on this machine).

    Examples:
        >>> [m["spec"] for m in zsclip.list_models() if m["available"]]
    """
    import open_clip

    rows = [{"spec": name, "source": "shipped", "available": True} for name in shipped_models()]
    rows += [{"spec": str(d), "source": "local", "available": True} for d in _local_model_dirs()]
    rows += [{"spec": f"hf-hub:{r}", "source": "hf-hub", "available": True} for r in _hub_cached_repos()]
    rows += [
        {"spec": f"{arch}:{tag}", "source": "open_clip", "available": cached_weights(arch, tag) is not None}
        for arch, tag in open_clip.list_pretrained()
    ]
    return rows
