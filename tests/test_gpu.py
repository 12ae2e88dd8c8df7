"""The GPU image path, run on the CPU: same files, same order, same skip rules, same predictions as PIL."""

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

import zsclip
from zsclip.engines import ReadOptions, embed_stream
from zsclip.models.preprocess import Preprocess
from zsclip.pipeline.gpu_decode import TensorPreprocess
from zsclip.pipeline.sources import expand_sources

from .conftest import sample_images


def test_mirrors_open_clip_preprocessing():
    vit = Preprocess.from_cfg(open_clip.get_model_preprocess_cfg(open_clip.create_model("ViT-B-32")))
    tp = TensorPreprocess.from_preprocess(vit)
    assert (tp.resize, tp.crop) == (224, (224, 224))
    assert tp.mean == vit.mean and tp.interpolation.value == "bicubic"
    squash = Preprocess.from_cfg({"size": 64, "resize_mode": "squash", "interpolation": "bilinear"})
    assert TensorPreprocess.from_preprocess(squash).resize == (64, 64)
    assert TensorPreprocess.from_preprocess(squash).interpolation.value == "bilinear"
    keep_ratio = Preprocess.from_cfg({"size": 64, "resize_mode": "longest"})
    assert TensorPreprocess.from_preprocess(keep_ratio) is None  # not mirrored: the CPU path runs
    assert TensorPreprocess.from_preprocess(Preprocess.from_cfg({"size": (64, 48)})) is None


def _mixed_folder(tmp_path):
    root = tmp_path / "mixed"
    root.mkdir()
    for i, (path, _) in enumerate(sample_images("imagenet-samples", 1, 30)):
        (root / f"{i:02d}.jpg").symlink_to(path)
    Image.new("RGB", (50, 40), (10, 200, 30)).save(root / "50.png")
    (root / "51.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    (root / "52.jpg").write_text("<html>")
    (root / "53.txt").write_text("ignored")
    return root


def test_device_path_matches_the_cpu_path(tiny_model_dir, tmp_path):
    root = _mixed_folder(tmp_path)
    model = zsclip.load_model(str(tiny_model_dir))
    sources = expand_sources([root])
    runs = {}
    for decode_on in ("cpu", "device"):
        batches = list(embed_stream(model, sources, ReadOptions(batch_size=8, workers=0, store=False, exact=True,
                                    decode_on=decode_on)))  # fmt: skip
        runs[decode_on] = (
            [p for b in batches for p in b.paths],
            torch.from_numpy(np.concatenate([b.features for b in batches if b.features is not None])),
            sorted(p for b in batches for p, _ in b.skipped),
        )
    (cpu_paths, cpu_feats, cpu_skips), (dev_paths, dev_feats, dev_skips) = runs["cpu"], runs["device"]
    assert dev_paths == cpu_paths and len(cpu_paths) == 31
    assert dev_skips == cpu_skips == [str(root / "51.jpg"), str(root / "52.jpg")]
    cosine = torch.nn.functional.cosine_similarity(cpu_feats, dev_feats, dim=-1)
    assert cosine.min().item() > 0.99
    clf = zsclip.build_classifier(model, ["fish", "bird", "dog", "car", "food", "tool"], "photo")
    weights = torch.from_numpy(clf.weights)
    agree = ((cpu_feats @ weights.T).argmax(-1) == (dev_feats @ weights.T).argmax(-1)).float().mean()
    assert agree.item() >= 0.9


def test_device_path_uses_the_store(tiny_model_dir, tmp_path, monkeypatch):
    root = _mixed_folder(tmp_path)
    model = zsclip.load_model(str(tiny_model_dir))
    sources = expand_sources([root])
    first = list(embed_stream(model, sources, ReadOptions(batch_size=8, decode_on="device")))
    calls = []
    original = model.model.encode_image
    monkeypatch.setattr(model.model, "encode_image", lambda x: calls.append(len(x)) or original(x))
    second = list(embed_stream(model, sources, ReadOptions(batch_size=8, decode_on="device")))
    assert calls == []
    assert [p for b in second for p in b.paths] == [p for b in first for p in b.paths]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_classify_runs(tiny_model_dir, tmp_path):
    root = _mixed_folder(tmp_path)
    model = zsclip.load_model(str(tiny_model_dir), device="cuda")
    clf = zsclip.build_classifier(model, ["fish", "bird"], "photo")
    records = list(zsclip.classify(model, clf, root))
    assert sum(hasattr(r, "label") for r in records) == 31
