import json
import math
import os
import subprocess
import sys
import time

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

import zsclip
from zsclip.core.errors import UsageError, ZsclipError
from zsclip.models import (
    cached_weights,
    fingerprint_spec,
    list_models,
    parse_spec,
    random_init_model,
    save_model_dir,
    shipped_models,
)

from .conftest import PREPROCESS, REPO, TINY_SIGLIP, TINY_VIT, put_in_hf_cache, save_local_dir


def test_spec_kinds(tiny_model_dir, tmp_path):
    assert parse_spec("ViT-B-32:openai").kind == "pretrained"
    assert parse_spec("ViT-B-16:laion2b_s34b_b88k").source == "laion2b_s34b_b88k"
    assert parse_spec("hf-hub:timm/ViT-B-16-SigLIP").kind == "hf-hub"
    assert parse_spec(f"local-dir:{tiny_model_dir}").kind == "local-dir"
    assert parse_spec(str(tiny_model_dir)).kind == "local-dir"
    ckpt = parse_spec("ViT-B-32:/some/where/weights.pt")
    assert (ckpt.kind, ckpt.arch, ckpt.source) == ("checkpoint", "ViT-B-32", "/some/where/weights.pt")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("ViT-B-23:openai", "unknown model 'ViT-B-23:openai'; did you mean"),
        ("ViT-B-32:opnai", "unknown pretrained tag 'opnai' for ViT-B-32; available: .*openai"),
        ("ViT-B-32", "give weights as ViT-B-32:TAG or ViT-B-32:/path/to/weights.pt"),
        ("", "--model is empty"),
    ],
)
def test_bad_specs_are_usage_errors(spec, message):
    with pytest.raises(UsageError, match=message):
        parse_spec(spec)


def test_directory_without_config_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="has no open_clip_config.json"):
        parse_spec(str(tmp_path))


def test_offline_pretrained_tag_fails_fast_with_one_clear_line(hf_cache):
    start = time.monotonic()
    with pytest.raises(ZsclipError) as info:
        zsclip.load_model("ViT-B-32:openai")
    message = str(info.value)
    assert time.monotonic() - start < 15
    assert "cannot load model ViT-B-32:openai" in message and "not downloaded" in message
    assert "ZSCLIP_MODEL" in message and "\n" not in message


def test_missing_checkpoint_file_is_a_load_error():
    with pytest.raises(ZsclipError, match=r"weights file /nope/w.pt does not exist.*ZSCLIP_MODEL") as info:
        zsclip.load_model("ViT-B-32:/nope/w.pt")
    assert info.value.exit_code == 1


def test_wrong_architecture_for_checkpoint_is_one_line(tiny_model_dir):
    weights = tiny_model_dir / "open_clip_model.safetensors"
    with pytest.raises(ZsclipError, match=f"cannot load model RN50:{weights}: {weights} does not hold RN50 weights"):
        zsclip.load_model(f"RN50:{weights}")


def test_cached_pretrained_tag_loads_offline_with_quickgelu_and_its_preprocessing(hf_cache, vitb32_weights):
    repo = open_clip.get_pretrained_cfg("ViT-B-32", "openai")["hf_hub"].rstrip("/")
    put_in_hf_cache(hf_cache, repo, {"open_clip_model.safetensors": vitb32_weights})
    assert cached_weights("ViT-B-32", "openai")
    model = zsclip.load_model("ViT-B-32:openai")
    assert model.fingerprint == "ViT-B-32:openai"
    assert not model.model.training
    # OpenAI weights need QuickGELU even under the plain name; open_clip alone would only warn.
    assert type(model.model.visual.transformer.resblocks[0].mlp.gelu).__name__ == "QuickGELU"
    assert model.preprocess.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    reference = open_clip.create_model("ViT-B-32", pretrained=str(vitb32_weights), force_quick_gelu=True).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(model.model.encode_image(x), reference.encode_image(x), atol=1e-5)
    assert any(r["spec"] == "ViT-B-32:openai" and r["available"] for r in list_models())


def test_real_architecture_checkpoint_and_fingerprint(vitb32_weights):
    spec = f"ViT-B-32-quickgelu:{vitb32_weights}"
    model = zsclip.load_model(spec)
    assert model.fingerprint.startswith("ViT-B-32-quickgelu@sha256:")
    assert fingerprint_spec(spec) == model.fingerprint
    assert model.logit_scale == pytest.approx(1 / 0.07, rel=1e-5)


def test_logit_scale_is_the_models_own_not_clamped(tmp_path):
    """Training clamps the scale at 100; inference uses the stored value (SigLIP-style models learn more, and
    their probabilities and --threshold depend on it) (issue 12.17)."""
    module = random_init_model(TINY_SIGLIP, seed=1)
    with torch.no_grad():
        module.logit_scale.fill_(math.log(200.0))
    directory = save_model_dir(module, TINY_SIGLIP, tmp_path / "m", preprocess_cfg=PREPROCESS)
    model = zsclip.load_model(str(directory))
    assert model.logit_scale == pytest.approx(200.0, rel=1e-5)
    clf = zsclip.build_classifier(model, ["red", "green", "blue"], "photo")
    assert clf.logit_scale == pytest.approx(200.0, rel=1e-5)
    again = zsclip.load_model(str(directory))  # from the cache, module not built
    assert not again.loaded and again.logit_scale == pytest.approx(200.0, rel=1e-5)
    image = torch.nn.functional.normalize(torch.randn(1, clf.weights.shape[1]), dim=-1)
    expected = (200.0 * image @ torch.from_numpy(clf.weights).T).softmax(dim=-1)
    assert np.allclose(zsclip.probabilities(image.numpy(), clf), expected.numpy(), atol=1e-5)
    with torch.no_grad():
        model.model.logit_scale.fill_(math.log(42.0))  # a built module is the truth
    assert model.logit_scale == pytest.approx(42.0)


def test_local_dir_fingerprint_changes_with_weights(tmp_path):
    a = save_local_dir(tmp_path / "a", TINY_VIT, seed=0)
    b = save_local_dir(tmp_path / "b", TINY_VIT, seed=0)
    c = save_local_dir(tmp_path / "c", TINY_VIT, seed=1)
    assert fingerprint_spec(str(a)) == fingerprint_spec(str(b)) == fingerprint_spec(f"local-dir:{b}")
    assert fingerprint_spec(str(a)) != fingerprint_spec(str(c))


def test_hf_hub_model_from_cache_loads_offline(hf_cache, tiny_model_dir):
    put_in_hf_cache(
        hf_cache,
        "someone/tiny-clip",
        {f.name: f for f in tiny_model_dir.iterdir()},
    )
    model = zsclip.load_model("hf-hub:someone/tiny-clip")
    assert model.fingerprint.endswith("@0123456789abcdef0123456789abcdef01234567")
    assert any(r["spec"] == "hf-hub:someone/tiny-clip" for r in list_models())


def test_hf_hub_model_not_downloaded_offline(hf_cache):
    with pytest.raises(ZsclipError, match="cannot load model hf-hub:someone/absent: not downloaded"):
        zsclip.load_model("hf-hub:someone/absent")


def test_env_var_selects_the_model(tiny_model_dir, monkeypatch):
    monkeypatch.setenv("ZSCLIP_MODEL", str(tiny_model_dir))
    assert zsclip.load_model().spec == str(tiny_model_dir)


def test_local_models_are_listed(tmp_path, monkeypatch):
    save_local_dir(tmp_path / "user-models" / "mine", TINY_VIT)
    rows = list_models()
    assert any(r["source"] == "local" and r["spec"].endswith("mine") for r in rows)
    assert sum(r["source"] == "open_clip" for r in rows) == len(open_clip.list_pretrained())


# -- QuickGELU: the offline hint and the loader give the tag's model (issue 12.18) -------------------------
def test_offline_hint_names_the_architecture_that_builds_the_tags_model(hf_cache):
    with pytest.raises(ZsclipError) as info:
        zsclip.load_model("ViT-B-32:openai")
    assert "--model ViT-B-32-quickgelu:/path/to/weights" in str(info.value)  # ViT-B-32:FILE would use nn.GELU
    with pytest.raises(ZsclipError) as info:
        zsclip.load_model("ViT-B-32:laion2b_s34b_b79k")  # trained with nn.GELU: the plain name is right
    assert "--model ViT-B-32:/path/to/weights" in str(info.value)


def _same_outputs(a, b) -> None:
    x = torch.randn(2, 3, *a.model.visual.image_size)
    tokens = torch.from_numpy(a.tokenizer(["a photo of a cat", "a dog"]))
    with torch.no_grad():
        assert torch.equal(a.model.encode_image(x), b.model.encode_image(x))
        assert torch.equal(a.model.encode_text(tokens), b.model.encode_text(tokens))
    assert a.preprocess == b.preprocess


@pytest.mark.slow  # three ViT-B-32 loads
def test_the_hinted_spec_and_the_tags_own_file_give_the_tags_model(hf_cache, vitb32_weights):
    repo = open_clip.get_pretrained_cfg("ViT-B-32", "openai")["hf_hub"].rstrip("/")
    put_in_hf_cache(hf_cache, repo, {"open_clip_model.safetensors": vitb32_weights})
    tag = zsclip.load_model("ViT-B-32:openai", lazy=False)
    hinted = zsclip.load_model(f"ViT-B-32-quickgelu:{vitb32_weights}", lazy=False)
    _same_outputs(tag, hinted)
    del hinted
    own_file = zsclip.load_model(f"ViT-B-32:{cached_weights('ViT-B-32', 'openai')}", lazy=False)
    assert type(own_file.model.visual.transformer.resblocks[0].mlp.gelu).__name__ == "QuickGELU"
    _same_outputs(tag, own_file)
    # Cached vectors are keyed by the model built: never shared with a GELU build of the same file.
    assert own_file.fingerprint.startswith("ViT-B-32-quickgelu@sha256:")


# -- loading without random initialisation (issue 13.2) ------------------------------------------------------
@pytest.fixture
def init_calls(monkeypatch) -> list[str]:
    """Calls to torch.nn.init's random initialisers."""
    calls = []
    for name in ("normal_", "uniform_", "trunc_normal_", "kaiming_uniform_", "xavier_uniform_"):
        real = getattr(torch.nn.init, name)
        monkeypatch.setattr(
            torch.nn.init, name, lambda t, *a, _n=name, _r=real, **k: calls.append(_n) or _r(t, *a, **k)
        )
    return calls


@pytest.mark.parametrize("kind", ["checkpoint", "shipped", "siglip"])
def test_loading_skips_random_init_and_gives_the_checkpoints_model(kind, request, init_calls):
    """The weights and embeddings equal open_clip's own load, and no weight was randomly initialised first."""
    from safetensors.torch import load_file

    if kind == "checkpoint":
        weights = request.getfixturevalue("vitb32_weights")
        spec, name, pretrained = f"ViT-B-32-quickgelu:{weights}", "ViT-B-32-quickgelu", str(weights)
    else:
        directory = shipped_models()["shapes"] if kind == "shipped" else request.getfixturevalue("tiny_siglip_dir")
        spec, name, pretrained = str(directory), f"local-dir:{directory}", None
        weights = directory / "open_clip_model.safetensors"
    init_calls.clear()  # a fixture made just now initialised its model
    model = zsclip.load_model(spec, lazy=False)
    assert init_calls == []
    stored = load_file(weights)
    state = model.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in stored.items()) and set(stored) <= set(state)
    reference, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained)
    assert init_calls  # open_clip alone initialises, then overwrites
    reference.eval()
    x = torch.randn(2, 3, *model.preprocess.size)
    tokens = torch.from_numpy(model.tokenizer(["a red star", "a blue cross"]))
    with torch.no_grad():
        assert torch.allclose(model.model.encode_image(x), reference.encode_image(x), atol=1e-6)
        assert torch.allclose(model.model.encode_text(tokens), reference.encode_text(tokens), atol=1e-6)
    image = Image.new("RGB", (90, 70), (10, 200, 30))
    assert np.abs(model.preprocess(image) - preprocess(image).numpy()).max() <= 1e-6


# -- a fully cached run builds no model ------------------------------------------------------------------------
def _shapes_run(model, classes, folder, **kw):
    clf = zsclip.build_classifier(model, classes, "shapes")
    return clf, [r.to_dict() for r in zsclip.classify(model, clf, folder, workers=0, **kw)]


def test_a_run_with_everything_cached_never_builds_the_model(tmp_path):
    folder = REPO / "examples" / "shapes"
    first = zsclip.load_model("shapes")
    assert first.loaded
    clf, records = _shapes_run(first, ["red star", "blue cross"], folder)
    second = zsclip.load_model("shapes")
    assert not second.loaded and second.fingerprint == first.fingerprint
    assert (second.logit_scale, second.image_size, second.preprocess_key) == (
        first.logit_scale, first.image_size, first.preprocess_key,
    )  # fmt: skip
    assert second.recommended_templates == first.recommended_templates == "shapes"
    clf2, again = _shapes_run(second, ["red star", "blue cross"], folder)
    assert not second.loaded
    assert again == records and np.array_equal(clf2.weights, clf.weights)
    # A new class needs the text tower: built on first use, giving what an eagerly loaded model gives.
    clf3, _ = _shapes_run(second, ["red star", "blue cross", "green circle"], folder)
    assert second.loaded
    eager = zsclip.build_classifier(
        zsclip.load_model("shapes", lazy=False), ["red star", "green circle"], "shapes", use_cache=False
    )
    assert np.allclose(clf3.weights[2], eager.weights[1], atol=1e-6)


_CACHED_RUN = """
import json, sys
import zsclip
model = zsclip.load_model("shapes")
clf = zsclip.build_classifier(model, ["red star", "blue cross"], "shapes")
records = [r.to_dict() for r in zsclip.classify(model, clf, sys.argv[1], workers=int(sys.argv[2]))]
print(json.dumps({"records": records, "open_clip": "open_clip" in sys.modules, "built": model.loaded}))
"""


@pytest.mark.slow  # two processes each
@pytest.mark.parametrize("workers", [0, 1])
def test_a_cached_rerun_does_not_import_open_clip_and_gives_the_same_records(tmp_path, workers):
    env = {**os.environ, "PYTHONPATH": str(REPO), "ZSCLIP_CACHE_DIR": str(tmp_path / "cache")}

    def run() -> dict:
        out = subprocess.run(
            [sys.executable, "-c", _CACHED_RUN, str(REPO / "examples" / "shapes"), str(workers)],
            env=env, cwd=tmp_path, capture_output=True, text=True, check=True,
        )  # fmt: skip
        return json.loads(out.stdout.splitlines()[-1])

    first, second = run(), run()
    assert first["open_clip"] and first["built"]
    assert not second["open_clip"] and not second["built"]
    assert second["records"] == first["records"] and len(first["records"]) == 12
