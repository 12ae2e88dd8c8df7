"""Shared fixtures: tiny random-init open_clip models saved to disk, real images from ../shared/data, and a
private cache directory per test so no test sees another's cached vectors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from hypothesis import settings

from zsclip.models import random_init_model, save_model_dir

# CI gets the same examples every run (a property test must not fail at random on someone else's change); run
# with HYPOTHESIS_PROFILE=explore for fresh random examples. No deadline: a 2-core CI machine is slow.
settings.register_profile("ci", derandomize=True, deadline=None)
settings.register_profile("explore", deadline=None, max_examples=2000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ZSCLIP_SHARED_DATA", REPO.parent / "shared" / "data"))

TINY_VIT = json.loads((REPO / "zsclip" / "configs" / "tiny-vit.json").read_text())
# SigLIP-style: sigmoid loss bias, no causal mask, last-token pooling, no CLIP text tower shortcuts.
TINY_SIGLIP = {
    "embed_dim": 64,
    "init_logit_bias": -10,
    "custom_text": True,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {
        "context_length": 64,
        "vocab_size": 49408,
        "width": 64,
        "heads": 2,
        "layers": 2,
        "no_causal_mask": True,
        "proj_bias": True,
        "pool_type": "last",
        "norm_kwargs": {"eps": 1e-6},
    },
}
PREPROCESS = {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]}


def save_local_dir(directory: Path, model_cfg: dict, seed: int = 0, zsclip_meta: dict | None = None) -> Path:
    """A random-init open_clip model in open_clip's local-dir format (what `zsclip train` writes)."""
    model = random_init_model(model_cfg, seed)
    return save_model_dir(model, model_cfg, directory, preprocess_cfg=PREPROCESS, metadata=zsclip_meta)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return save_local_dir(tmp_path_factory.mktemp("models") / "tiny-vit", TINY_VIT)


@pytest.fixture(scope="session")
def tiny_siglip_dir(tmp_path_factory) -> Path:
    return save_local_dir(tmp_path_factory.mktemp("models") / "tiny-siglip", TINY_SIGLIP, seed=1)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("ZSCLIP_CACHE_DIR", str(cache))
    monkeypatch.setenv("ZSCLIP_MODELS_DIR", str(tmp_path / "user-models"))
    for var in [
        v for v in os.environ if v.startswith("ZSCLIP_") and v not in ("ZSCLIP_CACHE_DIR", "ZSCLIP_SHARED_DATA")
    ]:
        if var != "ZSCLIP_MODELS_DIR":
            monkeypatch.delenv(var)
    # No ZSCLIP_BACKEND: every test runs the default backend users get (auto with the onnx extra installed), on a
    # model not prepared for ONNX Runtime in this fresh cache (torch, as a first run); tests/test_matrix.py runs
    # every command on each backend and on auto with the model prepared.
    return cache


def shared(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"{path} is missing (real evaluation images live in ../shared/data)")
    return path


def sample_images(name: str, per_class: int, limit_classes: int | None = None) -> list[tuple[Path, str]]:
    """(path, class name) for the first `per_class` images of each class of a ../shared/data set."""
    root = shared(name)
    rows = [line.split("\t") for line in (root / "classes.tsv").read_text().splitlines()[1:]]
    out = []
    for _, folder, classname in rows[:limit_classes]:
        files = sorted((root / folder).iterdir())[:per_class]
        out += [(f, classname.strip()) for f in files]
    return out


FAKE_COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="session")
def vitb32_weights(tmp_path_factory) -> Path:
    """ViT-B-32 (the real architecture) in random init, saved as safetensors."""
    import open_clip
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32", force_quick_gelu=True)
    path = tmp_path_factory.mktemp("vitb32") / "open_clip_model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    return path


@pytest.fixture
def hf_cache(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face cache for this test, with no network: the hub endpoint is a closed local port."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    return cache


def put_in_hf_cache(cache: Path, repo: str, files: dict[str, Path]) -> Path:
    """Lay files out as huggingface_hub does after a download (refs/main -> snapshots/<commit>/...)."""
    import shutil

    root = cache / ("models--" + repo.replace("/", "--"))
    snapshot = root / "snapshots" / FAKE_COMMIT
    snapshot.mkdir(parents=True)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(FAKE_COMMIT)
    for name, src in files.items():
        if src.stat().st_size > 50_000_000:
            (snapshot / name).symlink_to(src)
        else:
            shutil.copy(src, snapshot / name)
    return snapshot


def shapes_folders(root: Path, compositions, per_class: int, seed: int = 0) -> Path:
    """A labelled folder data set of shapes-world pictures: root/<colour shape>/<i>.png, per_class each."""
    import numpy as np

    from zsclip.datasets import shapes

    rng = np.random.default_rng(seed)
    for colour, shape in compositions:
        folder = root / f"{colour} {shape}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            shapes.render(shapes.sample_scene(rng, colour, shape), 64, rng).save(folder / f"{i}.png")
    return root


def served_url(proc, timeout: float = 120) -> str:
    """The URL a `zsclip serve` process prints on stderr once it listens (the test fails if it exits first)."""
    import re
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        line = proc.stderr.readline()
        if not line and proc.poll() is not None:
            pytest.fail(f"zsclip serve exited {proc.returncode}")
        found = re.search(r"at (http://\S+)", line)
        if found:
            return found.group(1)
    pytest.fail("zsclip serve never said where it serves")
