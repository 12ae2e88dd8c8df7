import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import zsclip
from zsclip.cli import app
from zsclip.store.cache import Cache

from .conftest import TINY_VIT, save_local_dir


def _images(root, n=6):
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(root / f"{i}.png")
    return root


@pytest.fixture
def counted(tiny_model_dir, monkeypatch):
    model = zsclip.load_model(str(tiny_model_dir))
    calls = []
    original = model.model.encode_image
    monkeypatch.setattr(model.model, "encode_image", lambda x: calls.append(len(x)) or original(x))
    return model, calls


def _run(model, classes, path, **kw):
    clf = zsclip.build_classifier(model, classes, "photo")
    return [r.to_dict() for r in zsclip.classify(model, clf, path, workers=0, **kw)]


def test_other_classes_encode_no_image_and_give_the_same_results(counted, tmp_path):
    model, calls = counted
    folder = _images(tmp_path / "imgs")
    _run(model, ["cat", "dog"], folder)
    assert sum(calls) == 6
    calls.clear()
    stored = _run(model, ["fox", "owl", "bee"], folder)
    assert calls == []
    fresh = _run(model, ["fox", "owl", "bee"], folder, store=False)
    assert sum(calls) == 6
    assert [r["label"] for r in stored] == [r["label"] for r in fresh]
    assert [r["prob"] for r in stored] == pytest.approx([r["prob"] for r in fresh], abs=1e-6)


def test_moved_files_are_found_by_content_and_changed_files_are_re_encoded(counted, tmp_path):
    model, calls = counted
    folder = _images(tmp_path / "imgs")
    _run(model, ["cat", "dog"], folder)
    calls.clear()
    moved = tmp_path / "elsewhere"
    shutil.move(folder, moved)
    os.rename(moved / "0.png", moved / "renamed.png")
    assert len(_run(model, ["cat", "dog"], moved)) == 6
    assert calls == []
    Image.new("RGB", (40, 40), (1, 2, 3)).save(moved / "1.png")
    st = os.stat(moved / "1.png")
    os.utime(moved / "1.png", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    _run(model, ["cat", "dog"], moved)
    assert calls == [1]


def test_another_model_never_reuses_vectors(counted, tmp_path):
    model, calls = counted
    folder = _images(tmp_path / "imgs", 3)
    _run(model, ["cat", "dog"], folder)
    assert calls == [3]
    other = zsclip.load_model(str(save_local_dir(tmp_path / "other", TINY_VIT, seed=5)))
    original = other.model.encode_image
    other_calls = []
    other.model.encode_image = lambda x: other_calls.append(len(x)) or original(x)
    _run(other, ["cat", "dog"], folder)
    assert sum(other_calls) == 3


def test_no_store_option_and_cache_info(tiny_model_dir, tmp_path, private_cache):
    folder = _images(tmp_path / "imgs", 4)
    runner = CliRunner()
    args = ["classify", str(folder), "-c", "a,b", "-m", str(tiny_model_dir), "-t", "photo"]
    first = runner.invoke(app, [*args, "--no-store"])
    assert first.exit_code == 0 and "0 image vectors" in runner.invoke(app, ["cache", "info"]).stdout
    runner.invoke(app, args)
    assert "4 image vectors" in runner.invoke(app, ["cache", "info"]).stdout
    again = runner.invoke(app, args)
    assert [json.loads(x)["label"] for x in again.stdout.splitlines()] == [
        json.loads(x)["label"] for x in first.stdout.splitlines()
    ]
    assert Cache(private_cache).info()[0].image_vectors == 4


def test_eval_reuses_the_store(counted, tmp_path):
    from zsclip.evaluate.run import evaluate

    model, calls = counted
    root = tmp_path / "data"
    _images(root / "a", 3)
    _images(root / "b", 3)
    first = evaluate(model, str(root), "photo", workers=0)
    calls.clear()
    second = evaluate(model, str(root), "imagenet7", workers=0)
    assert calls == [] and second.paths == first.paths


def test_lookups_use_indexes_not_scans(private_cache, tmp_path):
    """Each query a lookup runs must be an index seek: a scan made every new file cost O(stored files)."""
    from zsclip.store.embeddings import ImageStore

    store = ImageStore.open(Cache(private_cache), "fp", "variant")
    image = _images(tmp_path / "one", 1) / "0.png"
    traced = []
    store.conn.set_trace_callback(traced.append)
    vector, identity = store.lookup(str(image))
    store.conn.set_trace_callback(None)
    assert vector is None and identity is not None
    selects = [q for q in traced if q.lstrip().upper().startswith("SELECT")]
    assert len(selects) == 2
    for query in selects:
        plan = " ".join(row[-1] for row in store.conn.execute("EXPLAIN QUERY PLAN " + query).fetchall())
        assert "SEARCH" in plan and "SCAN" not in plan, plan
        assert "content_hash=?" in plan or "path=?" in plan, plan


def _bmp(path, colour):
    Image.new("RGB", (40, 40), colour).save(path)  # every 40x40 RGB BMP has the same size in bytes
    return path


def test_a_file_rewritten_with_its_old_size_and_mtime_is_encoded_again(counted, tmp_path):
    """`touch -r`, `exiftool -P`, archive tools: the content changes, path, size and mtime do not (issue 12.10)."""
    model, calls = counted
    folder = tmp_path / "imgs"
    folder.mkdir()
    a = _bmp(folder / "a.bmp", (255, 0, 0))
    b = _bmp(tmp_path / "b.bmp", (0, 0, 255))
    assert a.stat().st_size == b.stat().st_size
    _run(model, ["red", "blue"], folder)
    before = a.stat()
    a.write_bytes(b.read_bytes())  # in place: same inode
    os.utime(a, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = a.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (before.st_size, before.st_mtime_ns, before.st_ino)
    calls.clear()
    stored = _run(model, ["red", "blue"], folder)
    assert calls == [1]
    fresh = _run(model, ["red", "blue"], folder, store=False)
    assert [r["prob"] for r in stored] == pytest.approx([r["prob"] for r in fresh], abs=1e-6)


def test_a_file_replaced_by_rename_with_its_old_mtime_is_encoded_again(counted, tmp_path):
    model, calls = counted
    folder = tmp_path / "imgs"
    folder.mkdir()
    a = _bmp(folder / "a.bmp", (255, 0, 0))
    _run(model, ["red", "blue"], folder)
    before = a.stat()
    b = _bmp(tmp_path / "b.bmp", (0, 0, 255))
    os.utime(b, ns=(before.st_atime_ns, before.st_mtime_ns))
    os.replace(b, a)  # new inode, old size and mtime
    calls.clear()
    stored = _run(model, ["red", "blue"], folder)
    assert calls == [1]
    fresh = _run(model, ["red", "blue"], folder, store=False)
    assert [r["prob"] for r in stored] == pytest.approx([r["prob"] for r in fresh], abs=1e-6)


def test_a_metadata_only_change_reuses_the_vector_by_content(counted, tmp_path):
    model, calls = counted
    folder = _images(tmp_path / "imgs", 2)
    first = _run(model, ["cat", "dog"], folder)
    os.chmod(folder / "0.png", 0o600)  # new ctime, same content
    calls.clear()
    assert _run(model, ["cat", "dog"], folder) == first
    assert calls == []
