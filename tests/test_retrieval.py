"""zsclip.index and zsclip.search: incremental indexing on the image store, exact chunked search checked against a
brute-force computation with open_clip's own encoders, query arithmetic, scoping, errors and search.html."""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import zsclip
from zsclip.core.errors import UsageError
from zsclip.datasets.shapes import write_dataset
from zsclip.evaluate.recall_report import write_search_report
from zsclip.pipeline.encode import store_variant
from zsclip.retrieval.search import query_vector
from zsclip.store import snapshots

COLOURS = [(220, 30, 30), (30, 200, 40), (30, 60, 220), (240, 220, 30), (130, 40, 170), (250, 130, 20)]


def _images(folder: Path, n: int = 6, offset: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        rng = np.random.default_rng(i + offset)
        arr = np.clip(np.array(COLOURS[(i + offset) % 6]) + rng.normal(0, 40, (40, 40, 3)), 0, 255).astype(np.uint8)
        path = folder / f"img{i + offset:02d}.png"
        Image.fromarray(arr).save(path)
        out.append(path)
    return out


@pytest.fixture
def tiny(tiny_model_dir):
    return zsclip.load_model(str(tiny_model_dir))


def _stored_rows(model) -> list[str]:
    conn = zsclip.Cache().conn
    rows = conn.execute(
        "SELECT path FROM image_embeddings WHERE fingerprint = ? AND variant = ?",
        (model.fingerprint, store_variant(model)),
    ).fetchall()
    return sorted(r[0] for r in rows)


def _reference(model, paths: list[Path], text: str) -> dict[str, float]:
    """Cosine similarities computed without zsclip: open_clip's encode_image/encode_text, normalised."""
    with torch.no_grad():
        pixels = torch.from_numpy(np.stack([model.preprocess(Image.open(p).convert("RGB")) for p in paths]))
        img = torch.nn.functional.normalize(model.model.encode_image(pixels), dim=-1)
        txt = torch.nn.functional.normalize(model.model.encode_text(torch.from_numpy(model.tokenizer([text]))), dim=-1)[
            0
        ]
    return {str(p.resolve()): float(s) for p, s in zip(paths, (img @ txt).tolist(), strict=True)}


def test_index_counts_new_reused_changed_and_skipped(tiny, tmp_path):
    images = _images(tmp_path / "photos")
    (tmp_path / "photos" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    first = zsclip.index(tiny, tmp_path / "photos", workers=0)
    assert (first.new, first.reused, first.changed) == (6, 0, 0)
    assert [Path(p).name for p, _ in first.skipped] == ["broken.png"]

    again = zsclip.index(tiny, tmp_path / "photos", workers=0)
    assert (again.new, again.reused, again.changed, len(again.skipped)) == (0, 6, 0, 1)

    _images(tmp_path / "other", 1, offset=9)[0].replace(images[0])  # new content at an indexed path
    _images(tmp_path / "photos", 1, offset=20)  # a new file
    ticks = []
    third = zsclip.index(tiny, tmp_path / "photos", workers=0, on_batch=lambda d, s: ticks.append((d, s)))
    assert (third.new, third.reused, third.changed) == (1, 5, 1)
    assert sum(d for d, _ in ticks) == 7 and sum(s for _, s in ticks) == 1
    assert len(_stored_rows(tiny)) == 7


def test_moved_files_are_found_by_hash_missing_ones_leave_results_and_prune_removes_them(tiny, tmp_path):
    images = _images(tmp_path / "photos")
    zsclip.index(tiny, tmp_path / "photos", workers=0)
    (tmp_path / "photos" / "sub").mkdir()
    moved = tmp_path / "photos" / "sub" / "renamed.png"
    shutil.move(images[1], moved)
    images[2].unlink()

    result = zsclip.index(tiny, tmp_path / "photos", workers=0)
    assert (result.new, result.changed, result.reused, result.moved) == (0, 0, 5, 1)  # nothing encoded
    assert sorted(result.missing) == sorted(str(p.resolve()) for p in images[1:3])
    assert str(images[1].resolve()) in _stored_rows(tiny)  # kept until pruned ...

    hits = zsclip.search(tiny, "a photo", tmp_path / "photos", top=10, workers=0)
    assert sorted(h.path for h in hits) == sorted(
        str(p.resolve()) for p in [images[0], moved, *images[3:]]
    )  # ... but never found
    assert [h.rank for h in hits] == list(range(1, 6))

    pruned = zsclip.index(tiny, tmp_path / "photos", prune=True, workers=0)
    assert pruned.pruned == 2
    assert str(images[1].resolve()) not in _stored_rows(tiny) and len(_stored_rows(tiny)) == 5


def test_search_equals_brute_force_with_open_clip_for_any_chunk_size(tiny, tmp_path):
    images = _images(tmp_path / "photos", 9)
    reference = _reference(tiny, images, "a red square")
    expected = sorted(reference, key=lambda p: -reference[p])
    for budget in (4 * 64, 4 * 64 * 4, snapshots.DEFAULT_BUDGET):  # 1 row, 4 rows, everything per chunk
        hits = zsclip.search(tiny, "a red square", tmp_path / "photos", top=5, budget=budget, workers=0)
        assert [h.path for h in hits] == expected[:5]
        assert [h.score for h in hits] == pytest.approx([reference[p] for p in expected[:5]], abs=1e-5)


def test_paths_limit_the_search_and_unindexed_folders_are_indexed_first(tiny, tmp_path):
    a = _images(tmp_path / "a", 4)
    b = _images(tmp_path / "ab", 3, offset=10)  # "ab" sorts right after "a/": a prefix match would leak it
    zsclip.index(tiny, tmp_path / "a", workers=0)
    only_a = zsclip.search(tiny, "a photo", tmp_path / "a", top=10, workers=0)
    assert sorted(h.path for h in only_a) == sorted(str(p.resolve()) for p in a)

    ticks = []
    only_b = zsclip.search(tiny, "a photo", [tmp_path / "ab"], top=10, workers=0, on_batch=lambda d, s: ticks.append(d))
    assert sorted(h.path for h in only_b) == sorted(str(p.resolve()) for p in b) and sum(ticks) == 3
    one_file = zsclip.search(tiny, "a photo", [b[0]], top=10, workers=0)
    assert [h.path for h in one_file] == [str(b[0].resolve())]
    everything = zsclip.search(tiny, "a photo", None, top=100)
    assert len(everything) == 7


def test_query_arithmetic_matches_open_clip_and_image_query_finds_itself(tiny, tmp_path):
    images = _images(tmp_path / "photos")
    with torch.no_grad():
        t = torch.nn.functional.normalize(
            tiny.model.encode_text(torch.from_numpy(tiny.tokenizer(["dog", "beach", "people"]))), dim=-1
        )
    expected = torch.nn.functional.normalize(t[0] + t[1] - t[2], dim=0).numpy()
    got = query_vector(tiny, "dog", add=["beach"], subtract=["people"])
    assert got == pytest.approx(expected, abs=1e-5)

    hits = zsclip.search(tiny, None, tmp_path / "photos", top=3, image=images[4], workers=0)
    assert hits[0].path == str(images[4].resolve()) and hits[0].score == pytest.approx(1.0, abs=1e-5)


def test_templates_ensemble_the_query_like_a_class_name(tiny):
    clf = zsclip.build_classifier(tiny, ["dog", "cat"], ["a photo of a {}.", "a drawing of a {}."])
    assert query_vector(tiny, "dog", templates=["a photo of a {}.", "a drawing of a {}."]) == pytest.approx(
        clf.weights[0], abs=1e-6
    )


def test_threshold_and_top(tiny, tmp_path):
    _images(tmp_path / "photos")
    hits = zsclip.search(tiny, "a photo", tmp_path / "photos", top=6, workers=0)
    cut = (hits[2].score + hits[3].score) / 2
    assert len(zsclip.search(tiny, "a photo", tmp_path / "photos", top=6, threshold=cut)) == 3
    assert len(zsclip.search(tiny, "a photo", tmp_path / "photos", top=2)) == 2
    with pytest.raises(UsageError, match="--top 0"):
        zsclip.search(tiny, "a photo", tmp_path / "photos", top=0)
    with pytest.raises(UsageError, match="--threshold 2"):
        zsclip.search(tiny, "a photo", tmp_path / "photos", threshold=2.0)


def test_errors_are_usage_errors_that_say_what_to_do(tiny, tmp_path):
    with pytest.raises(UsageError, match="zsclip index"):
        zsclip.search(tiny, "a photo")  # nothing stored for this model
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match=r"no images indexed .* under .*empty.*zsclip index"):
        zsclip.search(tiny, "a photo", tmp_path / "empty", workers=0)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"<html>not an image</html>")
    with pytest.raises(UsageError, match=r"--image .*bad.jpg: cannot read"):
        zsclip.search(tiny, None, image=bad)
    with pytest.raises(UsageError, match="no such file"):
        zsclip.search(tiny, None, image=tmp_path / "nope.png")
    with pytest.raises(UsageError, match="cancel out"):
        query_vector(tiny, "dog", subtract=["dog"])
    with pytest.raises(UsageError, match="no such file or directory"):
        zsclip.search(tiny, "a photo", tmp_path / "missing")


def test_search_sees_rows_other_commands_store_and_survives_lost_triggers(tiny, tmp_path):
    a = _images(tmp_path / "photos", 3)
    assert len(zsclip.search(tiny, "x", tmp_path / "photos", top=10, workers=0)) == 3
    more = _images(tmp_path / "photos", 2, offset=30)
    clf = zsclip.build_classifier(tiny, ["red", "blue"], ["{}"])
    list(zsclip.classify(tiny, clf, more, workers=0))  # classify stores them; search must not miss them
    assert len(zsclip.search(tiny, "x", None, top=10)) == 5
    conn = zsclip.Cache().conn
    for trigger in ("zsclip_image_added", "zsclip_image_removed"):  # as a schema rebuild of the table would
        conn.execute(f"DROP TRIGGER {trigger}")
    conn.execute("DELETE FROM image_embeddings WHERE path = ?", (str(a[0].resolve()),))
    assert len(zsclip.search(tiny, "x", None, top=10)) == 4


def test_top_k_is_exact_for_every_budget_and_range():
    rng = np.random.default_rng(1)
    data = rng.normal(size=(5000, 16)).astype(np.float32)
    q = rng.normal(size=16).astype(np.float32)
    scores = data @ q
    for budget in (4 * 16, 4 * 16 * 7, 4 * 16 * 1000, 1 << 30):
        for k in (1, 10, 37):
            for ranges in ([(0, 5000)], [(10, 700), (1200, 1201), (4000, 5000)]):
                rows = np.concatenate([np.arange(lo, hi) for lo, hi in ranges])
                expected = rows[np.argsort(-scores[rows], kind="stable")][:k]
                idx, sc = snapshots.top_k(data, q, k, ranges, budget)
                assert idx.tolist() == expected.tolist()
                assert sc == pytest.approx(scores[expected], abs=1e-5)


def test_snapshot_ranges_find_folders_and_files_by_binary_search():
    paths = sorted(["/a/x.png", "/a/y/z.png", "/ab.png", "/a.png", "/b/c.png", "/a b/q.png"])
    offsets = np.cumsum([0] + [len(p.encode()) for p in paths])
    snap = snapshots.Snapshot(
        np.zeros((len(paths), 2), np.float32), snapshots.PathList("".join(paths).encode(), offsets)
    )
    pick = lambda roots: [snap.paths[i] for lo, hi in snap.ranges(roots) for i in range(lo, hi)]  # noqa: E731
    assert pick([("/a", False)]) == ["/a/x.png", "/a/y/z.png"]
    assert pick([("/a/", False), ("/a/y", False)]) == ["/a/x.png", "/a/y/z.png"]
    assert pick([("/ab.png", True), ("/nope.png", True)]) == ["/ab.png"]
    assert pick([("/", False)]) == paths
    assert pick(None) == paths


def test_search_report_shows_thumbnails_in_rank_order(tiny, tmp_path):
    _images(tmp_path / "photos")
    hits = zsclip.search(tiny, "a photo", tmp_path / "photos", top=4, workers=0)
    page = write_search_report(hits, tmp_path / "report", {"query": "a photo", "model": tiny.spec}).read_text()
    positions = [page.index(h.path) for h in hits]
    assert positions == sorted(positions)
    assert page.count("data:image/jpeg;base64,") == 4 and "a photo" in page


@pytest.mark.slow
def test_shipped_shapes_model_finds_red_circles_with_precision_at_10(tmp_path):
    """The 36 compositions of `zsclip data shapes`, 10 images each: 9 of the top 10 for "red circle" must be."""
    write_dataset(tmp_path / "shapes", n=1, seed=5, eval_per_class=10)
    model = zsclip.load_model("shapes")
    hits = zsclip.search(model, "red circle", tmp_path / "shapes" / "eval", top=10, workers=0)
    relevant = [Path(h.path).parent.name == "red circle" for h in hits]
    assert len(hits) == 10 and sum(relevant) >= 9, [Path(h.path).parent.name for h in hits]


def test_index_accepts_list_files_and_reports_skips_like_classify(tiny, tmp_path):
    images = _images(tmp_path / "photos", 3)
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(map(str, [*images, tmp_path / "gone.png"])))
    result = zsclip.index(tiny, [f"@{listing}"], workers=0)
    assert result.new == 3 and [Path(p).name for p, _ in result.skipped] == ["gone.png"]
    assert os.path.exists(zsclip.Cache().path)


def test_stored_vector_file_is_not_read_through_sqlite_per_query(tiny, tmp_path, monkeypatch):
    """A second query over an unchanged store uses the snapshot: no rebuild."""
    _images(tmp_path / "photos", 3)
    zsclip.search(tiny, "x", tmp_path / "photos", workers=0)
    calls = []
    monkeypatch.setattr(snapshots, "_build", lambda *a: calls.append(a) or pytest.fail("rebuilt"))
    zsclip.search(tiny, "y", tmp_path / "photos", workers=0)
    assert not calls


def test_cache_clear_removes_the_search_snapshots(tiny, tmp_path):
    _images(tmp_path / "photos", 2)
    zsclip.search(tiny, "x", tmp_path / "photos", workers=0)
    assert any((zsclip.Cache().directory / "search").iterdir())
    zsclip.Cache().clear()
    assert not (zsclip.Cache().directory / "search").exists()
    with pytest.raises(UsageError, match="zsclip index"):
        zsclip.search(tiny, "x")


def test_approximate_search_with_every_list_probed_equals_exact(tmp_path, monkeypatch):
    pytest.importorskip("faiss")
    rng = np.random.default_rng(4)
    data = rng.normal(size=(3000, 32)).astype(np.float32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    paths = [f"/x/{i:05d}.jpg" for i in range(3000)]
    offsets = np.cumsum([0] + [len(p) for p in paths])
    snap = snapshots.Snapshot(data, snapshots.PathList("".join(paths).encode(), offsets), tmp_path)
    monkeypatch.setattr(snapshots, "APPROX_MIN_ROWS", 0)
    q = data[7] + 0.1 * rng.normal(size=32).astype(np.float32)
    for ranges in ([(0, 3000)], [(100, 900), (2000, 2500)]):
        exact_rows, exact_scores = snapshots.top_k(data, q, 10, ranges)
        rows, scores = snapshots.approximate_top_k(snap, q, 10, ranges, nprobe=10_000)
        assert rows.tolist() == exact_rows.tolist() and scores == pytest.approx(exact_scores, abs=1e-5)
        rows, _ = snapshots.approximate_top_k(snap, q, 10, ranges)  # the default probes a twentieth of the lists
        assert all(any(lo <= r < hi for lo, hi in ranges) for r in rows.tolist())
    assert (tmp_path / "faiss.index").is_file()


def test_no_recursive_search_keeps_to_the_folder_itself(tiny, tmp_path):
    root = tmp_path / "photos"
    _images(root)
    _images(root / "sub")
    everything = zsclip.search(tiny, "a photo", root, top=50, workers=0)  # indexes the subfolder too
    assert any(Path(h.path).parent == root / "sub" for h in everything)
    hits = zsclip.search(tiny, "a photo", root, top=50, recursive=False, workers=0)
    assert len(hits) == 6 and all(Path(h.path).parent == root for h in hits)


def test_a_file_that_no_longer_decodes_is_never_returned_with_its_old_vector(tiny, tmp_path):
    """Issue 21 item 7: the index run skipped the broken file, but search served its stored row."""
    images = _images(tmp_path / "photos")
    zsclip.index(tiny, tmp_path / "photos")
    target = images[0]
    query = query_vector(tiny, image=target)
    assert zsclip.search(tiny, query, tmp_path / "photos", top=1)[0].path == str(target.resolve())
    target.write_bytes(b"\x89PNG\r\n\x1a\n" + b"cut short" * 10)  # the photo is overwritten by a broken upload
    hits = zsclip.search(tiny, query, tmp_path / "photos", top=10)
    assert str(target.resolve()) not in {h.path for h in hits} and len(hits) == 5
    assert [h.rank for h in hits] == [1, 2, 3, 4, 5]


def test_a_search_snapshot_cut_short_is_rebuilt_not_read(tiny, tmp_path, capsys):
    """Issue 21 item 13: a truncated vectors.f32 gave 'mmap length is greater than file size' on every search."""
    _images(tmp_path / "photos")
    zsclip.index(tiny, tmp_path / "photos")
    first = zsclip.search(tiny, "a red square", tmp_path / "photos", top=3)
    snapshots._OPENED.clear()  # a new process
    (snapshot,) = (zsclip.Cache().directory / "search").glob("*/vectors.f32")
    with open(snapshot, "r+b") as f:
        f.truncate(snapshot.stat().st_size // 2)
    again = zsclip.search(tiny, "a red square", tmp_path / "photos", top=3, index_first=False)
    assert [(h.path, round(h.score, 5)) for h in again] == [(h.path, round(h.score, 5)) for h in first]
    assert "damaged; rebuilding the snapshot" in capsys.readouterr().err
    for name in ("paths.bin", "offsets.npy", "stats.npy"):  # every file of it is checked
        snapshots._OPENED.clear()
        (path,) = (zsclip.Cache().directory / "search").glob(f"*/{name}")
        path.write_bytes(b"garbage")
        assert [h.path for h in zsclip.search(tiny, "a red square", tmp_path / "photos", top=3)] == [
            h.path for h in first
        ]


def test_a_copy_is_counted_as_copied_not_moved(tiny, tmp_path):
    """Issue 21 item 19: `index` counted copies as 'moved'."""
    images = _images(tmp_path / "photos")
    zsclip.index(tiny, tmp_path / "photos", workers=0)
    shutil.copy(images[0], tmp_path / "photos" / "copy.png")
    shutil.move(images[1], tmp_path / "photos" / "renamed.png")
    result = zsclip.index(tiny, tmp_path / "photos", workers=0)
    assert (result.reused, result.copied, result.moved, result.new) == (7, 1, 1, 0)
    assert result.to_dict()["copied"] == 1


def test_the_api_reads_its_cache_and_exact_from_the_read_options(tmp_path):
    """Review of issue 32: read=ReadOptions(exact=True) indexed one store and searched another; read.cache was
    replaced by the default cache."""
    import zsclip
    from zsclip.engines import ReadOptions
    from zsclip.store.cache import Cache

    _images(tmp_path / "photos", 3)
    model = zsclip.load_model("shapes", backend="torch")
    mine = Cache(tmp_path / "mine")
    read = ReadOptions(exact=True, cache=mine, workers=0)
    hits = zsclip.search(model, "a red circle", tmp_path / "photos", read=read)
    assert len(hits) == 3
    assert mine.conn.execute("SELECT COUNT(*) FROM image_embeddings").fetchone()[0] == 3
    with pytest.raises(zsclip.UsageError, match="store=False"):
        zsclip.index(model, tmp_path / "photos", store=False)
