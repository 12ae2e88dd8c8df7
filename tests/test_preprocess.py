"""zsclip.models.preprocess against open_clip's own eval transform: the same model input to 1e-6 (issue 23)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from PIL import Image

from zsclip.models.preprocess import Preprocess

SIZES = [(1, 1), (3, 500), (500, 3), (224, 224), (223, 225), (640, 480), (480, 640), (100, 37), (1000, 999), (57, 57)]
CFGS = [
    {"size": 224},
    {"size": 224, "interpolation": "bilinear"},
    {"size": 224, "interpolation": "random"},
    {"size": 64, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)},
    {"size": (256, 192)},
    {"size": (192, 256), "interpolation": "bilinear"},
    {"size": 224, "resize_mode": "squash"},
    {"size": (160, 224), "resize_mode": "squash", "interpolation": "bilinear"},
    {"size": 224, "resize_mode": "longest"},
    {"size": 224, "resize_mode": "longest", "fill_color": 128, "interpolation": "bilinear"},
    {"size": (200, 300), "resize_mode": "longest", "fill_color": 255},
]


def images():
    rng = np.random.default_rng(0)
    for w, h in SIZES:
        smooth = np.linspace(0, 255, w * h * 3).reshape(h, w, 3)
        noise = rng.integers(0, 256, (h, w, 3))
        yield Image.fromarray(((smooth + noise) / 2).astype(np.uint8), "RGB")


@pytest.mark.parametrize("cfg", CFGS, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_equal_to_open_clip_transform(cfg):
    from open_clip.transform import PreprocessCfg, image_transform_v2

    reference = image_transform_v2(PreprocessCfg(**cfg), is_train=False)
    ours = Preprocess.from_cfg(cfg)
    for image in images():
        want = reference(image).numpy()
        got = ours(image)
        assert got.dtype == np.float32 and got.shape == want.shape, (image.size, cfg)
        assert np.abs(got - want).max() <= 1e-6, (image.size, cfg)


def test_batches_normalise_like_single_images():
    pre = Preprocess.from_cfg({"size": 32})
    pixels = np.stack([pre.geometry(im.resize((40, 50))) for im in itertools.islice(images(), 4)])
    assert pixels.dtype == np.uint8 and pixels.shape == (4, 32, 32, 3)
    batch = pre.normalize(pixels)
    assert batch.shape == (4, 3, 32, 32)
    for i in range(4):
        assert np.array_equal(batch[i], pre.normalize(pixels[i]))


def test_the_models_own_config_round_trips_and_keys_what_matters():
    pre = Preprocess.from_cfg({"size": 224, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]})
    assert Preprocess.from_cfg(pre.to_json()) == pre
    assert pre.key == Preprocess.from_cfg(pre.to_json()).key
    assert pre.key != Preprocess.from_cfg({"size": 224}).key
    assert (
        pre.key != Preprocess.from_cfg({"size": 224, "mean": [0.5] * 3, "std": [0.5] * 3, "resize_mode": "squash"}).key
    )


def test_unknown_modes_are_refused():
    with pytest.raises(ValueError, match="resize_mode"):
        Preprocess.from_cfg({"size": 224, "resize_mode": "stretch"})
    with pytest.raises(ValueError, match="RGB"):
        Preprocess.from_cfg({"size": 224, "mode": "L"})
