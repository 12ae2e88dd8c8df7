"""Model specs -> what they name, checked without loading anything:

NAME                    a model shipped inside zsclip (see `shipped_models()`)
hf-hub:org/repo         open_clip's Hugging Face hub schema
local-dir:/path         open_clip's local directory schema (open_clip_config.json + weights)
/path/to/dir            a directory holding open_clip_config.json (what `zsclip train` writes)
ARCH:/path/weights.pt   a local checkpoint (.pt/.pth/.bin/.safetensors) of an open_clip architecture
ARCH:TAG                open_clip pretrained weights, e.g. ViT-B-32:openai (downloaded to the HF cache)
"""

from __future__ import annotations

import difflib
import importlib.util
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from zsclip.core.errors import UsageError
from zsclip.store.cache import Cache

CONFIG_NAME = "open_clip_config.json"
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")


ALTERNATIVES = (
    "use a local checkpoint (--model ARCH:/path/to/weights.pt), a model directory (--model /path/to/dir), "
    "or set ZSCLIP_MODEL"
)


@dataclass(frozen=True)
class ModelSpec:
    """A parsed spec: what to load, and from where."""

    spec: str
    kind: str  # "shipped" | "hf-hub" | "local-dir" | "checkpoint" | "pretrained"
    arch: str  # open_clip model name, or the schema string for hf-hub/local-dir
    source: str  # pretrained tag, file path, directory path or hub repo


def shipped_models() -> dict[str, Path]:
    """Models that ship inside the package: name -> directory in open_clip's local-dir format."""
    root = resources.files("zsclip") / "shipped"
    if not root.is_dir():
        return {}
    return {
        entry.name: Path(str(entry)) for entry in root.iterdir() if entry.is_dir() and (entry / CONFIG_NAME).is_file()
    }


def parse_spec(spec: str, cache: Cache | None = None) -> ModelSpec:
    """Resolve a spec string to what it names; unknown names are a usage error with close suggestions.

    With `cache`, an ARCH:TAG that loaded before is taken as valid without importing open_clip."""
    spec = spec.strip()
    if not spec:
        raise UsageError("--model is empty: give a spec such as ViT-B-32:openai or a model directory")
    shipped = shipped_models()
    if spec in shipped:
        return ModelSpec(spec, "shipped", f"local-dir:{shipped[spec]}", str(shipped[spec]))
    if spec.startswith("hf-hub:"):
        return ModelSpec(spec, "hf-hub", spec, spec[len("hf-hub:") :])
    if spec.startswith("local-dir:"):
        path = _expand(spec[len("local-dir:") :])
        return ModelSpec(spec, "local-dir", f"local-dir:{path}", str(path))
    path = _expand(spec)
    if os.path.isdir(path):  # os.path: False for any name the OS rejects (too long, NUL), not an exception
        if not os.path.isfile(path / CONFIG_NAME):
            raise UsageError(f"--model {spec}: directory has no {CONFIG_NAME} (the format zsclip train writes)")
        return ModelSpec(spec, "local-dir", f"local-dir:{path}", str(path))
    arch, sep, rest = spec.partition(":")
    if not _is_arch(arch):
        if sep and rest and os.path.isfile(_expand(rest)):  # ARCH:/existing/file with an unknown ARCH
            raise UsageError(
                f"--model {spec}: unknown architecture {arch!r} for the checkpoint {rest}"
                f"{_suggest(arch, _open_clip_archs())}"
            )
        if os.sep in spec or path.suffix in WEIGHT_SUFFIXES:
            raise UsageError(f"--model {spec}: no such file or directory; {ALTERNATIVES}")
        raise UsageError(f"unknown model {spec!r}{_suggest(spec, _known_specs())}")
    if not sep or not rest:
        import open_clip

        tags = open_clip.list_pretrained_tags_by_model(arch)
        hint = f"; pretrained tags: {', '.join(tags)}" if tags else ""
        raise UsageError(f"--model {spec}: give weights as {arch}:TAG or {arch}:/path/to/weights.pt{hint}")
    if os.sep in rest or rest.endswith(WEIGHT_SUFFIXES) or os.path.isfile(_expand(rest)):
        return ModelSpec(spec, "checkpoint", arch, str(_expand(rest)))
    if cache is not None and cache.model_info(f"{arch}:{rest}") is not None:  # loaded before: a known tag
        return ModelSpec(spec, "pretrained", arch, rest)
    import open_clip

    if open_clip.get_pretrained_cfg(arch, rest):
        return ModelSpec(spec, "pretrained", arch, rest)
    tags = open_clip.list_pretrained_tags_by_model(arch)
    raise UsageError(
        f"unknown pretrained tag {rest!r} for {arch}"
        + (f"; available: {', '.join(tags)}" if tags else f"; {arch} has no pretrained tags, give a checkpoint path")
    )


def _is_arch(name: str) -> bool:
    """Whether open_clip knows the architecture, read from its config folder without importing it (open_clip
    lists exactly those files), else from open_clip itself (configs added at run time)."""
    plain = bool(name) and not any(c in name for c in ("/", "\\", "\0")) and not name.startswith(".")
    found = importlib.util.find_spec("open_clip") if plain else None
    for folder in (found.submodule_search_locations or []) if found else []:
        if os.path.isfile(os.path.join(folder, "model_configs", f"{name}.json")):
            return True
    import open_clip

    return name in open_clip.list_models()


def _expand(path: str) -> Path:
    """~ and ~user expanded where they name a home directory (Path.expanduser raises for an unknown user)."""
    try:
        return Path(path).expanduser()
    except (RuntimeError, ValueError):  # no such user; a NUL byte in the name
        return Path(path)


def _known_specs() -> list[str]:
    import open_clip

    return [*shipped_models(), *(f"{a}:{t}" for a, t in open_clip.list_pretrained()), *open_clip.list_models()]


def _open_clip_archs() -> list[str]:
    import open_clip

    return open_clip.list_models()


def _suggest(word: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(word, candidates, n=3, cutoff=0.6)
    return f"; did you mean {', '.join(close)}?" if close else "; `zsclip models` lists the known names"
