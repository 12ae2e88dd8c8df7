import math
import time

import open_clip
import pytest
import torch

import zsclip
from zsclip.errors import UsageError, ZsclipError
from zsclip.models import cached_weights, fingerprint_spec, list_models, parse_spec

from .conftest import TINY_VIT, put_in_hf_cache, save_local_dir


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
    normalize = model.preprocess.transforms[-1]
    assert tuple(normalize.mean) == pytest.approx((0.48145466, 0.4578275, 0.40821073))
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


def test_logit_scale_is_the_models_own_clamped_at_100(tmp_path):
    model = zsclip.load_model(str(save_local_dir(tmp_path / "m", TINY_VIT)))
    with torch.no_grad():
        model.model.logit_scale.fill_(math.log(42.0))
        assert model.logit_scale == pytest.approx(42.0)
        model.model.logit_scale.fill_(math.log(500.0))
        assert model.logit_scale == 100.0


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
