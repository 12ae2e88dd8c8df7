"""`zsclip eval wds:DIR` / `wds/NAME`: CLIP_benchmark's webdataset data sets on the command line, with --split,
--task, --root, the offline error, skip lines naming shard and key, and a grid over wds sets that resumes."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import zsclip
from zsclip.cli import app

from .wds_data import encode, shapes_images, write_classification, write_retrieval

runner = CliRunner()
CLASSES = [("red", "circle"), ("blue", "square"), ("green", "triangle")]
NAMES = [f"{c} {s}" for c, s in CLASSES]


def _eval(*args):
    return runner.invoke(app, ["eval", *map(str, args), "--workers", "0"])


@pytest.fixture(scope="module")
def labelled():
    return [(encode(im, "png"), "png", label) for im, label in shapes_images(CLASSES, 3)]


@pytest.fixture
def shard_set(tmp_path, labelled):
    return write_classification(tmp_path / "wds_shapes3", labelled, NAMES, per_shard=4)


def test_eval_scores_a_local_copy_with_its_own_templates(shard_set, tiny_model_dir):
    result = _eval(f"wds:{shard_set}", "-m", tiny_model_dir, "-f", "json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["images"] == 9 and summary["templates"] == "dataset" and summary["num_templates"] == 2
    api = zsclip.evaluate(zsclip.load_model(str(tiny_model_dir)), f"wds:{shard_set}", workers=0)
    assert summary["metrics"] == pytest.approx(api.metrics)


def test_split_task_and_retrieval_sets(tmp_path, labelled, tiny_model_dir):
    root = write_classification(tmp_path / "w", labelled, NAMES, split="train")
    missing = _eval(f"wds:{root}", "-m", tiny_model_dir)
    assert missing.exit_code == 2 and "no split 'test'" in missing.stderr and "train (--split)" in missing.stderr
    assert _eval(f"wds:{root}", "--split", "train", "-m", tiny_model_dir, "-f", "json").exit_code == 0
    bad = _eval(f"wds:{root}", "--split", "train", "--task", "captions", "-m", tiny_model_dir)
    assert bad.exit_code == 2 and "--task captions: use one of classification, retrieval" in bad.stderr
    coco = write_retrieval(tmp_path / "coco", [(d, s, ["a caption"]) for d, s, _ in labelled])
    retrieval = _eval(f"wds:{coco}", "-m", tiny_model_dir, "-f", "json")  # dataset_type.txt says retrieval
    assert retrieval.exit_code == 0, retrieval.output
    summary = json.loads(retrieval.stdout)
    assert summary["task"] == "retrieval" and summary["images"] == len(labelled)
    assert set(summary["metrics"]) >= {"image_retrieval_recall@1", "text_retrieval_recall@5"}
    forced = _eval(f"wds:{coco}", "--task", "classification", "-m", tiny_model_dir)
    assert forced.exit_code == 2 and len(forced.stderr.strip().splitlines()) == 1


def test_offline_a_hub_data_set_fails_in_one_line_and_root_uses_a_copy(hf_cache, shard_set, tiny_model_dir):
    offline = _eval("wds/vtab/flowers", "-m", tiny_model_dir)
    assert offline.exit_code == 1
    assert offline.stderr.count("error:") == 1
    assert "datasets/clip-benchmark/wds_vtab-flowers" in offline.stderr and "--root DIR" in offline.stderr
    copy = _eval("wds/shapes3", "--root", shard_set.parent, "-m", tiny_model_dir, "-f", "json")
    assert copy.exit_code == 0, copy.output
    assert json.loads(copy.stdout)["images"] == 9


def test_a_bad_sample_is_a_skip_line_naming_its_shard_and_key(shard_set, tiny_model_dir):
    from zsclip.store.shards import member_address, shard_index

    shard = shard_set / "test" / "0.tar"
    offset, size = shard_index(str(shard)).members["s0000001.png"]
    data = bytearray(shard.read_bytes())
    data[offset : offset + size] = b"\0" * size
    shard.write_bytes(bytes(data))
    result = _eval(f"wds:{shard_set}", "-m", tiny_model_dir, "-f", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["images"] == 8
    line = f"skipped {member_address(shard, 's0000001.png')}: sample s0000001 of shard {shard}: "
    assert line in result.stderr


def test_a_grid_over_wds_sets_resumes_and_encodes_nothing_again(tmp_path, labelled, shard_set, tiny_model_dir):
    other = write_classification(tmp_path / "other", labelled[:6], NAMES, templates=None)
    report = tmp_path / "grid"
    args = [f"wds:{shard_set}", f"wds:{other}", "-m", tiny_model_dir, "-m", "shapes", "--report", report]
    first = _eval(*args, "-f", "json")
    assert first.exit_code == 0, first.output
    rows = json.loads(first.stdout)
    assert [r["n"] for r in rows] == [9, 6, 9, 6]
    again = _eval(*args, "-f", "json")
    assert all(r.get("resumed") for r in json.loads(again.stdout))
    single = _eval(f"wds:{other}", "-m", "shapes", "-t", "photo")  # other templates: images from the store
    assert single.exit_code == 0 and "6 of 6 image embeddings came from the image store" in single.stderr


def test_prompts_compare_on_a_wds_set_after_eval_encodes_no_image(shard_set, tiny_model_dir):
    assert _eval(f"wds:{shard_set}", "-m", tiny_model_dir).exit_code == 0
    args = ["prompts", "compare", f"wds:{shard_set}", "--sets", "default,photo", "-m", tiny_model_dir, "--workers", "0"]
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    assert "9 of 9 image embeddings came from the image store" in result.stderr
    assert "default (dataset)" in result.stdout


def test_a_grid_scores_the_split_asked_for(tmp_path, labelled, tiny_model_dir):
    root = write_classification(tmp_path / "w", labelled, NAMES, split="train")
    listing = tmp_path / "datasets.txt"
    listing.write_text(f"wds:{root}\n")
    grid = _eval("--datasets", listing, "--split", "train", "-m", tiny_model_dir, "-f", "json")
    assert grid.exit_code == 0, grid.output
    (row,) = json.loads(grid.stdout)
    assert row["error"] is None and row["n"] == len(labelled) and row["options"]["split"] == "train"
    missing = _eval("--datasets", listing, "-m", tiny_model_dir, "-f", "json")  # the test split is not there
    assert missing.exit_code == 1 and "no split 'test'" in json.loads(missing.stdout)[0]["error"]
