"""ONNX Runtime backends (zsclip.backends): torch's vectors and labels on tiny models, int8 labels settled by the
fp32 tower, never mixed in the cache with torch's, exports rebuilt when damaged, auto measured once and remembered,
a run on exported towers without torch, and one line naming the pip command when the extra is missing."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO, sample_images
from zsclip import backends
from zsclip.backends import Exports, builtin_images, resolve_backend, use_backend
from zsclip.backends import probe as probe_module
from zsclip.backends.int8 import threshold, uncertain
from zsclip.classify.predict import classify
from zsclip.classify.recheck import Recheck
from zsclip.core.errors import UsageError, ZsclipError
from zsclip.datasets.shapes import COMPOSITIONS, classname
from zsclip.engines import ReadOptions, embed_stream
from zsclip.models import load_model, vector_key
from zsclip.pipeline.encode import encode_images
from zsclip.store.cache import Cache
from zsclip.zeroshot.classifier import build_classifier, encode_prompts

PROMPTS = ["a", "a photo of a red circle.", "a blurry photo of a very small green hexagon on a grey background.", "x y"]
CLASSES = [classname(c, s) for c, s in COMPOSITIONS[:8]]
CIFAR = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(autouse=True)
def onnx_available():
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def _vectors(spec: str, backend: str):
    model = use_backend(load_model(spec, device="cpu"), backend, show=False)
    return model, encode_images(model, builtin_images(model, 12)), np.stack(encode_prompts(model, PROMPTS))


@pytest.mark.parametrize("which", ["tiny-vit", "shapes", "tiny-siglip"])
def test_onnx_gives_torch_vectors_and_int8_stays_close(which, tiny_model_dir, tiny_siglip_dir):
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
    np.testing.assert_array_equal(int8_texts, onnx_texts)  # onnx-int8's text tower is the fp32 one


def test_classify_labels_agree_end_to_end():
    """The whole path (decode, store, classify) with only the encoder swapped: the shipped model's labels."""
    images = [str(p) for p, _ in sample_images("cifar10-test", per_class=2)]
    runs = {}
    for backend in ("torch", "onnx"):
        model = use_backend(load_model("shapes", device="cpu"), backend, show=False)
        clf = build_classifier(model, CLASSES, "shapes")
        runs[backend] = [(r.path, r.label) for r in classify(model, clf, images, workers=0)]
    assert runs["onnx"] == runs["torch"]
    assert len(runs["torch"]) == len(images)


def test_int8_labels_are_the_fp32_labels():
    """Photos far from the shipped model's domain (flat probabilities: int8 alone flips ~1.5% of labels here): the
    check re-encodes the images near a tie, and every label is the fp32 tower's (and torch's)."""
    images = [str(p) for p, _ in sample_images("cifar10-test", per_class=40)]
    labels = {}
    for backend in ("torch", "onnx", "onnx-int8"):
        model = use_backend(load_model("shapes", device="cpu"), backend, show=False, calibration=None)
        clf = build_classifier(model, CIFAR, "photo")
        recheck = Recheck(model, clf)
        labels[backend] = [r.label for r in classify(model, clf, images, workers=0, recheck=recheck)]
        if backend == "onnx-int8":
            assert 0 < recheck.rechecked < len(images) // 2
            # Without the check, int8 alone gives other labels for some of these images.
            raw = np.concatenate(
                [b.features for b in embed_stream(model, [(p, True) for p in images], ReadOptions(workers=0))]
            )
            assert (raw @ clf.weights.T).argmax(-1).tolist() != [CIFAR.index(x) for x in labels["onnx"]]
    assert labels["onnx-int8"] == labels["onnx"] == labels["torch"]


def test_the_check_re_encodes_exactly_the_images_near_a_tie():
    rng = np.random.default_rng(0)
    weights = np.eye(3, 4, dtype=np.float32)
    features = np.array([[1.0, 0.0, 0, 0], [0.51, 0.49, 0, 0], [0.2, 0.1, 0.9, 0]], dtype=np.float32)
    features /= np.linalg.norm(features, axis=-1, keepdims=True)
    margin = 0.05
    assert uncertain(features, weights, margin).tolist() == [False, True, False]
    assert uncertain(features, weights, 0.0).tolist() == [False, False, False]
    errors = rng.normal(0, 0.01, (50, 4)).astype(np.float32)
    assert threshold(errors, weights) == pytest.approx(
        0.75 * max(abs(errors @ ((weights[i] - weights[j]) / np.sqrt(2))).max() for i in range(3) for j in range(i))
    )


def test_int8_check_is_calibrated_on_the_runs_own_images(tmp_path):
    images = [p for p, _ in sample_images("cifar10-test", per_class=1)]
    from zsclip.cli.options import Backend, Device
    from zsclip.pipeline.sources import expand_sources

    sources = expand_sources([str(p) for p in images])
    model = Backend("onnx-int8").load("shapes", Device("cpu"), Cache(), quiet=True, sources=sources)
    meta = json.loads(Exports(model, Cache()).meta_path.read_text())
    assert meta["check"]["images"] == {"own": len(images), "built-in": 64}


def test_an_int8_check_made_from_another_int8_tower_is_measured_again(tiny_model_dir):
    model = use_backend(load_model(str(tiny_model_dir), device="cpu"), "onnx-int8", show=False)
    exports = Exports(model, Cache())
    assert exports.check_intact()
    errors = exports.ensure_check()
    tower = exports.path("image", "int8")
    tower.write_bytes(tower.read_bytes() + b"\0")  # another file now: the recorded check no longer describes it
    again = Exports(model, Cache())
    assert not again.check_intact()
    np.testing.assert_allclose(again.ensure_check(), errors, atol=1e-6)  # re-made from the rebuilt tower
    assert again.check_intact()


def test_torch_and_onnx_share_vectors_and_int8_images_are_kept_apart(tiny_model_dir):
    """torch and onnx compute one fp32 function: a model prepared for ONNX Runtime reuses what torch stored (and
    the other way), so every command and a later `--prepare` find the vectors already there. int8's image vectors
    round, and are never handed to the fp32 backends, nor fp32's to int8."""
    cache = Cache()
    torch_model = load_model(str(tiny_model_dir), device="cpu", cache=cache)
    onnx_model = use_backend(load_model(str(tiny_model_dir), device="cpu", cache=cache), "onnx", cache=cache)
    int8_model = use_backend(load_model(str(tiny_model_dir), device="cpu", cache=cache), "onnx-int8", cache=cache)
    assert vector_key(torch_model) == vector_key(onnx_model) == "fp32"  # caches written before backends stay valid
    assert vector_key(int8_model) == "fp32+onnx-int8" and vector_key(int8_model, "text") == "fp32"
    assert build_classifier(torch_model, CLASSES, "shapes", cache=cache).encoded_prompts > 0
    assert build_classifier(onnx_model, CLASSES, "shapes", cache=cache).encoded_prompts == 0  # torch's, shared
    assert build_classifier(int8_model, CLASSES, "shapes", cache=cache).encoded_prompts == 0  # the same text tower
    images = sample_images("cifar10-test", per_class=1)
    sources = [(str(p), True) for p, _ in images]

    def reused(model) -> int:
        return sum(b.reused for b in embed_stream(model, sources, ReadOptions(workers=0, cache=cache)))

    assert reused(int8_model) == 0
    assert reused(torch_model) == 0  # int8's vectors are not handed to torch
    assert reused(onnx_model) == len(images)  # torch's are onnx's
    assert reused(int8_model) == len(images)  # its own, stored


def test_damaged_export_is_rebuilt(tiny_model_dir, capsys):
    model = use_backend(load_model(str(tiny_model_dir), device="cpu"), "onnx", show=False)
    reference = encode_images(model, builtin_images(model, 4))
    exports = Exports(model, Cache())
    image = exports.path("image")
    data = bytearray(image.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = b"\xff" * 64  # same size, different bytes: a silent corruption
    image.write_bytes(bytes(data))
    exports.path("text").write_bytes(b"not a model")  # truncated
    model = use_backend(load_model(str(tiny_model_dir), device="cpu"), "onnx", show=False)
    assert np.allclose(encode_images(model, builtin_images(model, 4)), reference, atol=1e-6)
    assert len(encode_prompts(model, PROMPTS)) == len(PROMPTS)
    err = capsys.readouterr().err
    assert "image.onnx is missing or damaged; rebuilding it" in err
    assert "text.onnx is missing or damaged; rebuilding it" in err
    assert not list(exports.directory.glob(".*tmp"))  # atomic writes leave no temporaries


def test_export_is_made_once_per_model(tiny_model_dir, monkeypatch):
    use_backend(load_model(str(tiny_model_dir), device="cpu"), "onnx-int8", show=False)

    def no_export(*args, **kwargs):
        raise AssertionError("made again")

    import zsclip.backends.exports
    import zsclip.backends.onnx_export

    # Patched where exports.py looks them up (it imports the int8 functions at its top).
    monkeypatch.setattr(zsclip.backends.onnx_export, "export_tower", no_export)
    monkeypatch.setattr(zsclip.backends.exports, "quantize_image_tower", no_export)
    monkeypatch.setattr(zsclip.backends.exports, "errors", no_export)
    model = use_backend(load_model(str(tiny_model_dir), device="cpu"), "onnx-int8", show=False)
    assert encode_images(model, builtin_images(model, 2)).shape[0] == 2


def test_missing_extra_is_one_line_with_the_pip_command(tiny_model_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if it were not installed
    model = load_model(str(tiny_model_dir), device="cpu")
    with pytest.raises(ZsclipError) as info:
        use_backend(model, "onnx-int8")
    message = str(info.value)
    assert "\n" not in message
    assert "--backend onnx-int8" in message and "pip install 'zsclip[onnx]'" in message
    assert use_backend(model, "torch").backend == "torch"  # torch needs no extra


def test_backend_names_devices_and_the_default(tiny_model_dir, monkeypatch):
    assert resolve_backend(None) == "auto"  # the onnx extra is installed here
    monkeypatch.setattr(backends, "onnx_installed", lambda: False)
    assert resolve_backend(None) == "torch"
    monkeypatch.setenv("ZSCLIP_BACKEND", "onnx")
    assert resolve_backend(None) == "onnx"
    with pytest.raises(UsageError, match="--backend onnx8: use one of torch, onnx, onnx-int8, auto"):
        resolve_backend("onnx8")
    model = load_model(str(tiny_model_dir), device="cpu")
    model.device_name = "cuda"  # only the device type is looked at
    assert use_backend(model, "auto").backend == "torch"  # on a GPU, auto is torch
    with pytest.raises(UsageError, match="runs on the CPU"):
        use_backend(model, "onnx")
    model = load_model(str(tiny_model_dir), device="cpu", precision="bf16")
    with pytest.raises(UsageError, match="computes in fp32: drop --precision bf16"):
        use_backend(model, "onnx")


def _fake_measure(calls: list, onnx_speed: float = 12.0, onnx_agreement: float = 1.0):
    def measure(exports):
        calls.append(1)
        return {
            "torch": {"images_per_s": 10.0, "agreement": 1.0, "max_prob_diff": 0.0, "min_cosine": 1.0},
            "onnx": {"images_per_s": onnx_speed, "agreement": onnx_agreement, "max_prob_diff": 1e-7, "min_cosine": 1},
            "onnx-int8": {"images_per_s": 30.0, "agreement": 1.0, "max_prob_diff": 0.01, "min_cosine": 0.999},
        }

    return measure


def test_auto_runs_torch_until_prepared_then_what_prepare_measured(tiny_model_dir, monkeypatch, capsys):
    """auto never exports or measures inside a run (a first run costs what torch costs: it cost 3-4x); `prepare`
    does, once; then auto takes onnx unless torch is clearly faster, never int8 (its vectors are not torch's),
    the same choice in every later run."""
    from zsclip.backends import prepare

    calls = []
    monkeypatch.setattr(probe_module, "measure", _fake_measure(calls))
    model = use_backend(load_model(str(tiny_model_dir), device="cpu"), "auto")
    assert model.backend == "torch" and not calls
    assert not list(Exports(model, Cache()).directory.glob("*.onnx"))
    assert f"zsclip models --prepare {tiny_model_dir}" in capsys.readouterr().err
    assert prepare(load_model(str(tiny_model_dir), device="cpu"), show=False)["choice"] == "onnx"  # int8 is faster
    for _ in range(2):
        again = use_backend(load_model(str(tiny_model_dir), device="cpu"), "auto")
        assert again.backend == "onnx" and len(calls) == 1  # measured once, remembered
    assert "prepare" not in capsys.readouterr().err
    (saved,) = json.loads((Exports(model, Cache()).directory / "auto.json").read_text())["machines"].values()
    assert saved["choice"] == "onnx" and saved["results"]["onnx-int8"]["images_per_s"] == 30.0


@pytest.mark.parametrize(
    ("speed", "agreement", "choice"), [(9.5, 1.0, "onnx"), (8.0, 1.0, "torch"), (20, 0.9, "torch")]
)
def test_auto_takes_onnx_unless_torch_is_clearly_faster_or_onnx_disagrees(
    tiny_model_dir, monkeypatch, speed, agreement, choice
):
    from zsclip.backends import prepare

    monkeypatch.setattr(probe_module, "measure", _fake_measure([], speed, agreement))
    assert prepare(load_model(str(tiny_model_dir), device="cpu"), show=False)["choice"] == choice
    assert use_backend(load_model(str(tiny_model_dir), device="cpu"), "auto").backend == choice


def test_auto_falls_back_to_torch_when_its_exports_are_gone(tiny_model_dir, monkeypatch):
    from zsclip.backends import prepare

    monkeypatch.setattr(probe_module, "measure", _fake_measure([]))
    model = load_model(str(tiny_model_dir), device="cpu")
    prepare(model, show=False)
    Exports(model, Cache()).path("image").unlink()  # e.g. removed by hand: auto does not rebuild it inside a run
    assert use_backend(load_model(str(tiny_model_dir), device="cpu"), "auto", show=False).backend == "torch"


def test_auto_measures_real_agreement(tiny_model_dir):
    """The probe runs for real: torch agrees with itself, onnx with torch, int8 with its check too."""
    model = use_backend(load_model(str(tiny_model_dir), device="cpu"), "onnx-int8", show=False)
    results = probe_module.measure(Exports(model, Cache()))
    assert results["torch"]["agreement"] == 1.0
    assert results["onnx"]["agreement"] >= probe_module.BARS["onnx"]
    assert results["onnx"]["min_cosine"] > 0.9999
    assert results["onnx-int8"]["agreement"] >= probe_module.BARS["onnx-int8"]
    assert 0 <= results["onnx-int8"]["rechecked"] <= 1
    assert model.backend == "onnx-int8"  # measuring leaves the model as it was


def test_an_export_record_made_for_other_weights_is_not_trusted(tiny_model_dir, tiny_siglip_dir, capsys):
    """Issue 21: an export's record names what it was made from and is checked on read. Here the files of another
    model were put where this model's export lives (a copied cache): they are rebuilt, not used."""
    import shutil

    model = use_backend(load_model(str(tiny_model_dir), device="cpu"), "onnx", show=False)
    reference = encode_images(model, builtin_images(model, 4))
    mine = Exports(model, Cache())
    other = Exports(use_backend(load_model(str(tiny_siglip_dir), device="cpu"), "onnx", show=False), Cache())
    shutil.rmtree(mine.directory)
    shutil.copytree(other.directory, mine.directory)
    model = use_backend(load_model(str(tiny_model_dir), device="cpu"), "onnx", show=False)
    assert np.allclose(encode_images(model, builtin_images(model, 4)), reference, atol=1e-6)
    assert "was made from other fingerprint; the ONNX export is rebuilt" in capsys.readouterr().err


_NO_TORCH = """
import json, sys
from zsclip.cli import main
sys.argv = ["zsclip", *sys.argv[1:]]
try:
    main()
except SystemExit as exc:
    code = exc.code
print(json.dumps({"torch": "torch" in sys.modules, "open_clip": "open_clip" in sys.modules}), file=sys.stderr)
"""


@pytest.mark.parametrize("backend", ["onnx", "onnx-int8", "auto"])
def test_a_run_on_exported_towers_imports_neither_torch_nor_open_clip(backend, tmp_path):
    """Issue 23: once the towers are exported, a new image, and new class names, need no torch: preprocessing in
    PIL + NumPy, open_clip's tokenizer code run without torch, ONNX Runtime, scores in NumPy."""
    folder = REPO / "examples" / "shapes"
    env = {**os.environ, "PYTHONPATH": str(REPO), "ZSCLIP_BACKEND": backend}

    def run(*args):
        done = subprocess.run(
            [sys.executable, "-c", _NO_TORCH, "classify", *map(str, args), "-m", "shapes", "-t", "shapes"],
            env=env, capture_output=True, text=True, check=True, cwd=tmp_path,
        )  # fmt: skip
        return [json.loads(line) for line in done.stdout.splitlines()], json.loads(done.stderr.splitlines()[-1])

    if backend == "auto":  # auto exports nothing inside a run: prepared first, as users do
        done = subprocess.run([sys.executable, "-m", "zsclip", "models", "--prepare", "shapes", "-q", "-f", "jsonl"],
                              env=env, capture_output=True, text=True, cwd=tmp_path)  # fmt: skip
        assert done.returncode == 0, done.stderr
        if json.loads(done.stdout.splitlines()[1])["chosen"] is False:
            pytest.skip("auto chose torch for the shipped model on this CPU")
    _, imported = run(folder / "red_star.png", "-c", "red star,blue cross")
    assert imported["torch"] == (backend != "auto")  # exports (onnx, int8) with torch, once; prepared: none
    records, imported = run(folder / "blue_cross.png", "-c", "red star,blue cross")  # a new image
    assert imported == {"torch": False, "open_clip": False}
    assert records[0]["label"] == "blue cross"
    records, imported = run(folder / "green_hexagon.png", "-c", "green hexagon,red star,purple cross")  # new classes
    assert imported == {"torch": False, "open_clip": False}
    assert records[0]["label"] == "green hexagon"
