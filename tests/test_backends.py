"""ONNX Runtime backends (zsclip.backends): same vectors and labels as torch on tiny models, never mixed in the
cache with torch's, exports rebuilt when damaged, and one line naming the pip command when the extra is missing."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from tests.conftest import sample_images
from zsclip import backends
from zsclip.backends import Exports, resolve_backend, use_backend
from zsclip.cache import Cache
from zsclip.classify import classify
from zsclip.encode import encode_images
from zsclip.engines import embed_stream
from zsclip.errors import UsageError, ZsclipError
from zsclip.models import load_model, vector_key
from zsclip.shapes import COMPOSITIONS, classname
from zsclip.text import build_classifier, encode_prompts

PROMPTS = ["a", "a photo of a red circle.", "a blurry photo of a very small green hexagon on a grey background.", "x y"]
CLASSES = [classname(c, s) for c, s in COMPOSITIONS[:8]]


def onnx_available() -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def _vectors(spec: str, backend: str):
    model = use_backend(load_model(spec, device="cpu"), backend, show=False)
    pixels = backends.check_images(model, 12)
    return model, encode_images(model, pixels), np.stack(encode_prompts(model, PROMPTS))


@pytest.mark.parametrize("which", ["tiny-vit", "shapes", "tiny-siglip"])
def test_onnx_gives_torch_vectors_and_int8_stays_close(which, tiny_model_dir, tiny_siglip_dir):
    onnx_available()
    spec = {"tiny-vit": str(tiny_model_dir), "shapes": "shapes", "tiny-siglip": str(tiny_siglip_dir)}[which]
    _, images, texts = _vectors(spec, "torch")
    onnx_model, onnx_images, onnx_texts = _vectors(spec, "onnx")
    assert onnx_model.backend == "onnx"
    assert _cos(images, onnx_images).min() > 0.99999
    # Prompts of different lengths in one batch: the exported text tower's sequence axis is dynamic.
    assert _cos(texts, onnx_texts).min() > 0.99999
    np.testing.assert_allclose(onnx_texts, texts, rtol=1e-3, atol=1e-4)
    _, int8_images, int8_texts = _vectors(spec, "onnx-int8")
    assert _cos(images, int8_images).min() > 0.98
    assert _cos(texts, int8_texts).min() > 0.98


def test_classify_labels_agree_end_to_end(tmp_path):
    """The whole path (decode, store, classify) with only the encoder swapped: the shipped model's labels."""
    onnx_available()
    images = [str(p) for p, _ in sample_images("cifar10-test", per_class=2)]
    runs = {}
    for backend in ("torch", "onnx"):
        model = use_backend(load_model("shapes", device="cpu"), backend, show=False)
        clf = build_classifier(model, CLASSES, "shapes")
        runs[backend] = [(r.path, r.label) for r in classify(model, clf, images, workers=0)]
    assert runs["onnx"] == runs["torch"]
    assert len(runs["torch"]) == len(images)


def test_text_cache_and_image_store_keep_backends_apart(tiny_model_dir):
    onnx_available()
    cache = Cache()
    torch_model = load_model(str(tiny_model_dir), device="cpu", cache=cache)
    onnx_model = use_backend(load_model(str(tiny_model_dir), device="cpu", cache=cache), "onnx", cache=cache)
    assert vector_key(torch_model) == "fp32"  # unchanged: caches written before backends stay valid
    assert vector_key(onnx_model) == "fp32+onnx"
    assert build_classifier(torch_model, CLASSES, "shapes", cache=cache).encoded_prompts > 0
    assert build_classifier(onnx_model, CLASSES, "shapes", cache=cache).encoded_prompts > 0  # not torch's vectors
    assert build_classifier(onnx_model, CLASSES, "shapes", cache=cache).encoded_prompts == 0  # its own, cached
    images = sample_images("cifar10-test", per_class=1)
    sources = [(str(p), True) for p, _ in images]

    def reused(model) -> int:
        return sum(b.reused for b in embed_stream(model, sources, workers=0, cache=cache))

    assert reused(torch_model) == 0
    assert reused(onnx_model) == 0  # torch's stored vectors are not handed to the onnx backend
    assert reused(onnx_model) == len(images)
    assert reused(torch_model) == len(images)


def test_damaged_export_is_rebuilt(tiny_model_dir, capsys):
    onnx_available()
    model = use_backend(load_model(str(tiny_model_dir), device="cpu"), "onnx", show=False)
    reference = encode_images(model, backends.check_images(model, 4))
    exports = Exports(model, Cache())
    image = exports.path("image", False)
    data = bytearray(image.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = b"\xff" * 64  # same size, different bytes: a silent corruption
    image.write_bytes(bytes(data))
    exports.path("text", False).write_bytes(b"not a model")  # truncated
    model = use_backend(load_model(str(tiny_model_dir), device="cpu"), "onnx", show=False)
    assert np.allclose(encode_images(model, backends.check_images(model, 4)), reference, atol=1e-6)
    assert len(encode_prompts(model, PROMPTS)) == len(PROMPTS)
    err = capsys.readouterr().err
    assert "image.onnx is missing or damaged; rebuilding it" in err
    assert "text.onnx is missing or damaged; rebuilding it" in err
    assert not list(exports.directory.glob(".*tmp"))  # atomic writes leave no temporaries


def test_export_is_made_once_per_model(tiny_model_dir, monkeypatch):
    onnx_available()
    use_backend(load_model(str(tiny_model_dir), device="cpu"), "onnx-int8", show=False)

    def no_export(*args, **kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr(backends, "_export", no_export)
    monkeypatch.setattr(backends, "_quantize", no_export)
    model = use_backend(load_model(str(tiny_model_dir), device="cpu"), "onnx-int8", show=False)
    assert encode_images(model, backends.check_images(model, 2)).shape[0] == 2


def test_missing_extra_is_one_line_with_the_pip_command(tiny_model_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if it were not installed
    model = load_model(str(tiny_model_dir), device="cpu")
    with pytest.raises(ZsclipError) as info:
        use_backend(model, "onnx-int8")
    message = str(info.value)
    assert "\n" not in message
    assert "--backend onnx-int8" in message and "pip install 'zsclip[onnx]'" in message
    assert use_backend(model, "torch").backend == "torch"  # torch needs no extra


def test_backend_names_and_devices(tiny_model_dir, monkeypatch):
    assert resolve_backend(None) == "torch"
    monkeypatch.setenv("ZSCLIP_BACKEND", "onnx")
    assert resolve_backend(None) == "onnx"
    with pytest.raises(UsageError, match="--backend onnx8: use one of torch, onnx, onnx-int8, auto"):
        resolve_backend("onnx8")
    model = load_model(str(tiny_model_dir), device="cpu")
    model.device = torch.device("cuda")  # only the device type is looked at
    assert use_backend(model, "auto").backend == "torch"  # on a GPU, auto is torch
    with pytest.raises(UsageError, match="runs on the CPU"):
        use_backend(model, "onnx")
    model = load_model(str(tiny_model_dir), device="cpu", precision="bf16")
    with pytest.raises(UsageError, match="computes in fp32: drop --precision bf16"):
        use_backend(model, "onnx")


def test_auto_skips_a_backend_below_the_bar_and_remembers(tiny_model_dir, monkeypatch):
    onnx_available()
    calls = []

    def fake_measure(model, exports):
        calls.append(1)
        return {
            "torch": {"images_per_s": 10.0, "agreement": 1.0, "max_prob_diff": 0.0, "min_cosine": 1.0},
            "onnx": {"images_per_s": 12.0, "agreement": 1.0, "max_prob_diff": 1e-7, "min_cosine": 1.0},
            "onnx-int8": {"images_per_s": 30.0, "agreement": 0.98, "max_prob_diff": 0.1, "min_cosine": 0.99},
        }

    monkeypatch.setattr(backends, "measure", fake_measure)
    model = use_backend(load_model(str(tiny_model_dir), device="cpu"), "auto", show=False)
    assert model.backend == "onnx"  # int8 is fastest but misses 99.5% agreement
    again = use_backend(load_model(str(tiny_model_dir), device="cpu"), "auto", show=False)
    assert again.backend == "onnx" and len(calls) == 1  # measured once, remembered
    saved = json.loads((Exports(model, Cache()).directory / "auto.json").read_text())
    assert saved["choice"] == "onnx" and saved["results"]["onnx-int8"]["agreement"] == 0.98


def test_auto_measures_real_agreement(tiny_model_dir):
    """The built-in check runs for real: torch agrees with itself, onnx with torch."""
    onnx_available()
    model = load_model(str(tiny_model_dir), device="cpu")
    exports = Exports(model, Cache(), show=False)
    exports.ensure(int8=True)
    results = backends.measure(model, exports)
    assert results["torch"]["agreement"] == 1.0
    assert results["onnx"]["agreement"] >= backends.BARS["onnx"]
    assert results["onnx"]["min_cosine"] > 0.9999
    assert model.backend == "torch" and model.encoder is None  # measuring leaves the model as it was


def test_an_export_record_made_for_other_weights_is_not_trusted(tiny_model_dir, tiny_siglip_dir, capsys):
    """Issue 21: an export's record names what it was made from and is checked on read. Here the files of another
    model were put where this model's export lives (a copied cache): they are rebuilt, not used."""
    import shutil

    onnx_available()
    model = use_backend(load_model(str(tiny_model_dir), device="cpu"), "onnx", show=False)
    reference = encode_images(model, backends.check_images(model, 4))
    mine = Exports(model, Cache())
    other = Exports(use_backend(load_model(str(tiny_siglip_dir), device="cpu"), "onnx", show=False), Cache())
    shutil.rmtree(mine.directory)
    shutil.copytree(other.directory, mine.directory)
    model = use_backend(load_model(str(tiny_model_dir), device="cpu"), "onnx", show=False)
    assert np.allclose(encode_images(model, backends.check_images(model, 4)), reference, atol=1e-6)
    assert "was made from other fingerprint; the ONNX export is rebuilt" in capsys.readouterr().err
