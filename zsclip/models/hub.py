"""Downloaded weights: which pretrained tags are in the Hugging Face (or OpenAI) cache, whether the hub answers,
and which architecture a downloaded file builds (QuickGELU for OpenAI's weights)."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

from zsclip.models.spec import CONFIG_NAME, ModelSpec


def _hf_weight_candidates(cfg: dict) -> tuple[str, list[str]] | None:
    import open_clip

    hub = cfg.get("hf_hub", "")
    if not hub:
        return None
    repo, filename = os.path.split(hub)
    filename = filename or open_clip.pretrained.HF_WEIGHTS_NAME
    names = [*open_clip.pretrained._get_safe_alternatives(filename), filename]
    return repo, names


def cached_weights(arch: str, tag: str) -> str | None:
    """The local path of a pretrained tag's weights if they are already downloaded, else None."""
    import open_clip

    cfg = open_clip.get_pretrained_cfg(arch, tag)
    hub = _hf_weight_candidates(cfg)
    if hub:
        from huggingface_hub import try_to_load_from_cache

        repo, names = hub
        for name in names:
            found = try_to_load_from_cache(repo, name)
            if isinstance(found, str):
                return found
        return None
    url = cfg.get("url", "")
    target = Path("~/.cache/clip").expanduser() / os.path.basename(url)
    return str(target) if url and target.is_file() else None


def hub_reachable(timeout: float = 3.0) -> tuple[bool, str]:
    """Whether the Hugging Face endpoint answers, decided in seconds instead of minutes of retries."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False, "HF_HUB_OFFLINE is set"
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True, ""  # a proxy decides; let the download try
    url = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout):
            return True, ""
    except OSError as exc:
        return False, f"{url.hostname} cannot be reached ({exc.strerror or exc})"


@contextlib.contextmanager
def hub_offline(offline: bool) -> Iterator[None]:
    """Make huggingface_hub use only its cache, so cached models load at once with no network."""
    from huggingface_hub import constants

    saved = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = saved or offline
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved


def hub_config_file(repo: str) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo, CONFIG_NAME)
    return found if isinstance(found, str) else None


def quickgelu_name(arch: str, tag: str) -> str:
    """The architecture name that, given the tag's weights file, builds the tag's model: OpenAI-trained weights
    (and others open_clip marks quick_gelu) need the -quickgelu variant, the plain name uses nn.GELU."""
    import open_clip

    cfg = open_clip.get_pretrained_cfg(arch, tag) or {}
    if cfg.get("quick_gelu") and "quickgelu" not in arch.lower() and f"{arch}-quickgelu" in open_clip.list_models():
        return f"{arch}-quickgelu"
    return arch


def checkpoint_arch(parsed: ModelSpec) -> str:
    """The architecture a checkpoint is built as: what ARCH names, except for a pretrained tag's own downloaded
    file, which builds the tag's model (QuickGELU for OpenAI weights). Any other file cannot be told apart:
    ViT-B-32 has GELU-trained tags as well, so QuickGELU cannot be assumed. open_clip is imported only for a file
    inside a download cache, so a cached run on a checkpoint elsewhere never imports it."""
    from huggingface_hub import constants

    real = os.path.realpath(parsed.source)
    roots = (constants.HF_HUB_CACHE, Path("~/.cache/clip").expanduser())
    caches = [f(c) + os.sep for c in roots for f in (os.path.realpath, os.path.abspath)]
    named = os.path.abspath(parsed.source)  # a snapshot link, or the blob it points to
    if not any(p.startswith(c) for p in (real, named) for c in caches):
        return parsed.arch
    import open_clip

    for tag in open_clip.list_pretrained_tags_by_model(parsed.arch):
        with contextlib.suppress(Exception):  # a tag without a hub entry or an odd cache is simply not this file
            found = cached_weights(parsed.arch, tag)
            if found and os.path.realpath(found) == real:
                return quickgelu_name(parsed.arch, tag)
    return parsed.arch
