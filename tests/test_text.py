import numpy as np
import open_clip
import pytest
import torch
from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES, OPENAI_IMAGENET_TEMPLATES

import zsclip
from zsclip.store.cache import Cache

from .conftest import TINY_VIT, save_local_dir

CLASSES = list(IMAGENET_CLASSNAMES[:12])


def _count_text_calls(model, monkeypatch) -> list[int]:
    """Prompts that go through the text transformer, counted by a forward hook (either encoding path)."""
    calls = []
    model.model.transformer.register_forward_hook(lambda mod, args, out: calls.append(args[0].shape[0]))
    return calls


@pytest.mark.parametrize("fixture", ["tiny_model_dir", "tiny_siglip_dir"])
def test_classifier_matches_open_clip_build_zero_shot_classifier(fixture, request):
    directory = request.getfixturevalue(fixture)
    model = zsclip.load_model(str(directory))
    ours = torch.from_numpy(zsclip.build_classifier(model, CLASSES, "imagenet80").weights)

    ref_model, _, _ = open_clip.create_model_and_transforms(f"local-dir:{directory}")
    ref_model.eval()
    tokenizer = open_clip.get_tokenizer(f"local-dir:{directory}")
    with torch.no_grad():
        ref = open_clip.build_zero_shot_classifier(ref_model, tokenizer, CLASSES, OPENAI_IMAGENET_TEMPLATES).T
    cosine = torch.nn.functional.cosine_similarity(ours, ref, dim=-1)
    assert ours.shape == (len(CLASSES), 64)
    assert cosine.min().item() >= 0.9999
    assert torch.allclose(ours.norm(dim=-1), torch.ones(len(CLASSES)), atol=1e-5)


def test_second_build_encodes_no_text_and_only_new_prompts_are_encoded(tiny_model_dir, monkeypatch):
    model = zsclip.load_model(str(tiny_model_dir))
    calls = _count_text_calls(model, monkeypatch)
    first = zsclip.build_classifier(model, ["cat", "dog", "fox"], "imagenet7")
    assert first.encoded_prompts == 21 and sum(calls) == 21

    calls.clear()
    again = zsclip.build_classifier(model, ["cat", "dog", "fox"], "imagenet7")
    assert calls == [] and again.encoded_prompts == 0
    assert np.array_equal(again.weights, first.weights)

    reordered = zsclip.build_classifier(model, ["fox", "cat", "dog"], "imagenet7")
    assert calls == []
    assert np.array_equal(reordered.weights[0], first.weights[2])

    zsclip.build_classifier(model, ["cat", "dog", "fox", "owl"], "imagenet7")
    assert sum(calls) == 7  # one new class x 7 templates

    calls.clear()
    templates = [*zsclip.load_templates("imagenet7").templates, "a drawing of a {}."]
    zsclip.build_classifier(model, ["cat", "dog", "fox", "owl"], templates)
    assert sum(calls) == 4  # one new template x 4 classes


def test_cache_survives_a_new_process_view(tiny_model_dir, monkeypatch, private_cache):
    model = zsclip.load_model(str(tiny_model_dir))
    zsclip.build_classifier(model, ["cat", "dog"], "photo")
    fresh = zsclip.load_model(str(tiny_model_dir), cache=Cache(private_cache))
    calls = _count_text_calls(fresh, monkeypatch)
    zsclip.build_classifier(fresh, ["cat", "dog"], "photo", cache=Cache(private_cache))
    assert calls == []


def test_other_weights_never_share_vectors(tiny_model_dir, tmp_path, monkeypatch):
    a = zsclip.load_model(str(tiny_model_dir))
    b = zsclip.load_model(str(save_local_dir(tmp_path / "other", TINY_VIT, seed=7)))
    assert a.fingerprint != b.fingerprint
    zsclip.build_classifier(a, ["cat", "dog"], "photo")
    calls = _count_text_calls(b, monkeypatch)
    zsclip.build_classifier(b, ["cat", "dog"], "photo")
    assert sum(calls) == 2


def test_default_templates_come_from_model_metadata(tmp_path):
    directory = save_local_dir(tmp_path / "meta", TINY_VIT, zsclip_meta={"templates": "cifar10"})
    model = zsclip.load_model(str(directory))
    assert zsclip.build_classifier(model, ["cat", "dog"], "default").templates.name == "cifar10"


def test_default_templates_fall_back_to_imagenet80(tiny_model_dir):
    model = zsclip.load_model(str(tiny_model_dir))
    assert zsclip.build_classifier(model, ["cat", "dog"]).templates.name == "imagenet80"


def test_no_cache_option_writes_nothing(tiny_model_dir, private_cache):
    model = zsclip.load_model(str(tiny_model_dir))
    zsclip.build_classifier(model, ["cat", "dog"], "photo", use_cache=False)
    assert Cache(private_cache).info() == []  # nothing cached: no model has any vector


@pytest.mark.parametrize("fixture", ["tiny_model_dir", "tiny_siglip_dir", "vitb32_weights"])
def test_fast_text_encoding_matches_encode_text(fixture, request):
    """Trimmed CLIP towers and the generic path both give encode_text's vectors for every prompt length."""
    from zsclip.models.encoder import pool_positions
    from zsclip.zeroshot.classifier import encode_prompts

    target = request.getfixturevalue(fixture)
    spec = f"ViT-B-32-quickgelu:{target}" if fixture == "vitb32_weights" else str(target)
    model = zsclip.load_model(spec)
    prompts = [
        t.format(c)
        for c in ["cat", "golden retriever", "a very long class name with many words"]
        for t in ["{}", "a photo of a {}.", "a blurry black and white photo of the big {} in the city."]
    ]
    prompts.append("word " * 100)  # longer than the context: truncated, EOT at the last position
    ours = torch.from_numpy(np.stack(encode_prompts(model, prompts)))
    with torch.no_grad():
        reference = model.model.encode_text(torch.from_numpy(model.tokenizer(prompts)))
    cosine = torch.nn.functional.cosine_similarity(ours, reference, dim=-1)
    assert cosine.min().item() >= 0.99999
    trimmed = pool_positions(model.model, model.tokenizer(prompts)) is not None
    assert trimmed == (fixture != "tiny_siglip_dir")
