"""--shard i/N: N independent runs cover every file exactly once, stably."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zsclip.classify.predict import classify
from zsclip.core.errors import UsageError
from zsclip.models import load_model
from zsclip.pipeline.sources import expand_sources, in_shard, parse_shard, walk
from zsclip.zeroshot.classifier import build_classifier


def make_tree(root, n: int = 30):
    for i in range(n):
        folder = root / ("a" if i % 2 else "b") / ("deep" if i % 5 == 0 else "")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((np.random.RandomState(i).rand(40, 40, 3) * 255).astype("uint8")).save(folder / f"{i}.png")
    (root / "bad.jpg").write_bytes(b"nope")
    return root


def test_shards_union_equals_the_unsharded_run_with_no_overlap(tiny_model_dir, tmp_path):
    folder = make_tree(tmp_path / "imgs")
    clip = load_model(str(tiny_model_dir), device="cpu")
    clf = build_classifier(clip, ["red", "blue"], ["a {} image."])
    whole = [r.to_dict() for r in classify(clip, clf, folder, store=False, workers=0)]
    parts = [[r.to_dict() for r in classify(clip, clf, folder, store=False, workers=0, shard=(i, 3))] for i in range(3)]
    paths = [r["path"] for part in parts for r in part]
    assert len(paths) == len(set(paths)) == len(whole) == 31  # every file once, the bad one included
    assert all(part for part in parts)  # 31 files over 3 shards: none empty
    by_path = {r["path"]: r for part in parts for r in part}
    for r in whole:  # the same records: labels equal, probabilities within float error (other batches)
        assert by_path[r["path"]].get("label") == r.get("label")
        assert by_path[r["path"]].get("reason") == r.get("reason")
        assert by_path[r["path"]].get("prob", 0) == pytest.approx(r.get("prob", 0), abs=1e-5)
    for part in parts:  # each shard keeps walk order
        order = [r["path"] for r in whole if r["path"] in {p["path"] for p in part}]
        assert [r["path"] for r in part] == order


def test_a_file_s_shard_depends_on_its_path_under_the_argument_only(tmp_path):
    """The same tree under another root splits the same way; adding files moves no old one."""
    a, b = make_tree(tmp_path / "one", 12), make_tree(tmp_path / "two" / "nested", 12)
    for i in range(4):
        names_a = {str(Path(p).relative_to(a)) for p, _ in walk(expand_sources([a]), shard=(i, 4))}
        names_b = {str(Path(p).relative_to(b)) for p, _ in walk(expand_sources([b]), shard=(i, 4))}
        assert names_a == names_b
    before = {p for p, _ in walk(expand_sources([a]), shard=(1, 4))}
    for i in range(20):
        (a / f"new-{i}.png").write_bytes(b"x")
    after = {p for p, _ in walk(expand_sources([a]), shard=(1, 4))}
    assert before <= after
    assert in_shard("x/y.jpg", (0, 1))


@pytest.mark.parametrize("text", ["3/3", "-1/2", "1", "a/b", "0/0", "1/2/3"])
def test_bad_shard_is_a_usage_error(text):
    with pytest.raises(UsageError, match=f"--shard {text}: give i/N"):
        parse_shard(text)


def test_parse_shard():
    assert parse_shard("2/5") == (2, 5)
    assert parse_shard(None) is None
