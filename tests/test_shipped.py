"""The shapes model that ships inside zsclip: loadable by name, intact, and as good as its metadata says."""

import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import zsclip
from zsclip.cli import app
from zsclip.datasets.shapes import COMPOSITIONS, HELD_OUT, write_dataset
from zsclip.models import shipped_models

REPO = Path(__file__).resolve().parents[1]
CLASSES = [f"{c} {s}" for c, s in COMPOSITIONS]


def _meta() -> dict:
    return json.loads((shipped_models()["shapes"] / "open_clip_config.json").read_text())["zsclip"]


def test_shipped_weights_match_their_checksum_and_size_limit():
    weights = shipped_models()["shapes"] / "open_clip_model.safetensors"
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == _meta()["weights_sha256"]
    assert weights.stat().st_size <= 20 * 1024 * 1024


def test_metadata_records_command_templates_and_quality():
    meta = _meta()
    assert meta["templates"] == "shapes"
    assert meta["training_command"].startswith("zsclip train ")
    assert meta["metrics"]["held_out_acc1"] >= 0.90 and meta["metrics"]["seen_acc1"] >= 0.97


def test_shipped_model_labels_the_example_images_including_held_out_pairs():
    result = CliRunner().invoke(
        app,
        ["classify", str(REPO / "examples" / "shapes"), "--model", "shapes", "--classes", ",".join(CLASSES)],
    )
    assert result.exit_code == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == 12
    for r in records:
        assert r["label"] == Path(r["path"]).stem.replace("_", " ")
    held = {f"{c} {s}" for c, s in HELD_OUT}
    assert sum(r["label"] in held for r in records) == 6


def test_zero_shot_transfer_on_fresh_renders(tmp_path):
    """Re-measure on images the model never saw (a new seed): held-out pairs are recognised, not just stored."""
    write_dataset(tmp_path, n=1, seed=777, eval_per_class=10)
    model = zsclip.load_model("shapes")
    clf = zsclip.build_classifier(model, CLASSES, "default")
    assert clf.templates.name == "shapes"
    held = {f"{c} {s}" for c, s in HELD_OUT}
    hits = {True: [], False: []}
    for r in zsclip.classify(model, clf, tmp_path / "eval", workers=0):
        truth = Path(r.path).parent.name
        hits[truth in held].append(r.label == truth)
    assert len(hits[True]) == 60 and len(hits[False]) == 300
    assert sum(hits[True]) / 60 >= 0.85
    assert sum(hits[False]) / 300 >= 0.95


@pytest.mark.parametrize("name", ["shapes"])
def test_listed_as_shipped(name):
    rows = zsclip.list_models()
    assert {"spec": name, "source": "shipped", "available": True} in rows


def test_convolutional_tower_runs_channels_last_with_the_same_embeddings():
    import open_clip
    import torch

    from zsclip.pipeline.encode import encode_images

    model = zsclip.load_model("shapes")
    assert model.channels_last
    reference = open_clip.create_model(f"local-dir:{shipped_models()['shapes']}").eval()
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        expected = torch.nn.functional.normalize(reference.encode_image(x), dim=-1)
    assert torch.allclose(torch.from_numpy(encode_images(model, x)), expected, atol=1e-5)
