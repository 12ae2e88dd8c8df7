"""Parquet embedding shards: written whole, searched chunk by chunk, same answer as brute force."""

from __future__ import annotations

import numpy as np
import pytest

from zsclip.core.errors import UsageError, ZsclipError
from zsclip.engines import ReadOptions
from zsclip.retrieval.parquet import EmbeddingRow, export_embeddings, search_embeddings, write_embeddings

pytest.importorskip("pyarrow")


def unit_rows(n: int, dim: int = 16, fingerprint: str = "fp-a", seed: int = 0) -> tuple[list[EmbeddingRow], np.ndarray]:
    vectors = np.random.RandomState(seed).randn(n, dim).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return [EmbeddingRow(f"img/{i}.jpg", f"h{i}", fingerprint, v) for i, v in enumerate(vectors)], vectors


def test_search_matches_brute_force_across_shards_and_row_groups(tmp_path):
    rows, vectors = unit_rows(20_000)
    assert write_embeddings(tmp_path / "emb", rows, shard_rows=7_000) == 20_000
    names = sorted(p.name for p in (tmp_path / "emb").iterdir())
    assert names[0] == "manifest.json" and len(names) == 4 and all(n.endswith(".parquet") for n in names[1:])
    query = np.random.RandomState(1).randn(16).astype(np.float32)
    hits = search_embeddings(tmp_path / "emb", query, top=10, fingerprint="fp-a")
    expected = np.argsort(-(vectors @ (query / np.linalg.norm(query))), kind="stable")[:10]
    assert [h.path for h in hits] == [f"img/{i}.jpg" for i in expected]
    assert [h.content_hash for h in hits] == [f"h{i}" for i in expected]
    assert hits[0].score == pytest.approx(float(vectors[expected[0]] @ query / np.linalg.norm(query)), abs=1e-6)


def test_a_rewrite_replaces_the_old_shards(tmp_path):
    write_embeddings(tmp_path, unit_rows(50)[0], shard_rows=10)
    write_embeddings(tmp_path, unit_rows(5, seed=2)[0], shard_rows=10)
    assert len(list(tmp_path.glob("*.parquet"))) == 1
    assert len(search_embeddings(tmp_path, np.ones(16), top=100)) == 5


def test_another_model_s_vectors_are_an_error_not_scores(tmp_path):
    write_embeddings(tmp_path, unit_rows(5, fingerprint="fp-b")[0])
    with pytest.raises(ZsclipError, match="fp-b"):
        search_embeddings(tmp_path, np.ones(16), fingerprint="fp-a")
    with pytest.raises(ZsclipError, match="16-d vectors, the query is 8-d"):
        search_embeddings(tmp_path, np.ones(8))


def test_an_empty_directory_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="no export there"):
        search_embeddings(tmp_path, np.ones(4))


def test_export_writes_the_stream_s_vectors(tiny_model_dir, tmp_path):
    from PIL import Image

    from zsclip.engines import embed_stream
    from zsclip.models import load_model
    from zsclip.pipeline.sources import expand_sources
    from zsclip.store.embeddings import content_hash

    for i in range(5):
        Image.new("RGB", (32, 32), (40 * i, 0, 0)).save(tmp_path / f"{i}.png")
    clip = load_model(str(tiny_model_dir), device="cpu")
    sources = expand_sources([tmp_path])
    assert export_embeddings(clip, sources, tmp_path / "emb", ReadOptions(store=False, workers=0), None) == 5
    batch = next(embed_stream(clip, sources, ReadOptions(store=False, workers=0)))
    hits = search_embeddings(tmp_path / "emb", batch.features[2], top=1, fingerprint=clip.fingerprint)
    assert hits[0].path == str(tmp_path / "2.png")
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert hits[0].content_hash == content_hash(str(tmp_path / "2.png"))


def test_a_reexport_with_other_sharding_replaces_the_export_so_nothing_is_returned_twice(tmp_path):
    """Issue 21 item 8: an export kept earlier parts of another sharding beside it; search returned every image
    twice."""
    rows, _ = unit_rows(40)
    write_embeddings(tmp_path, rows, shard_rows=15)  # one whole export
    for i in range(2):  # the same images again, as two --shard i/2 jobs
        write_embeddings(tmp_path, rows[i::2], shard=(i, 2))
    hits = search_embeddings(tmp_path, np.ones(16), top=1000)
    assert sorted(h.path for h in hits) == sorted(r.path for r in rows)
    write_embeddings(tmp_path, rows[:10], shard=(0, 2))  # a rerun of one job replaces that job's parts only
    assert len(search_embeddings(tmp_path, np.ones(16), top=1000)) == 10 + 20


def test_a_killed_export_keeps_the_previous_one(tmp_path):
    rows, _ = unit_rows(30)
    write_embeddings(tmp_path, rows)

    def dying():
        yield from unit_rows(5, seed=3)[0]
        raise KeyboardInterrupt  # killed mid-export

    with pytest.raises(KeyboardInterrupt):
        write_embeddings(tmp_path, dying(), shard_rows=2)
    assert len(search_embeddings(tmp_path, np.ones(16), top=1000)) == 30
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".zsclip-export-")]


def test_a_missing_shard_job_is_said_and_the_rest_searched(tmp_path, capsys):
    rows, _ = unit_rows(30)
    write_embeddings(tmp_path, rows[:10], shard=(0, 3))
    write_embeddings(tmp_path, rows[10:20], shard=(2, 3))
    assert len(search_embeddings(tmp_path, np.ones(16), top=1000)) == 20
    assert "holds 2 of 3 shards (missing 1/3)" in capsys.readouterr().err


def test_a_damaged_or_cut_part_is_one_line_naming_it(tmp_path):
    """Issue 21 item 13: a damaged Parquet part gave ArrowInvalid."""
    write_embeddings(tmp_path, unit_rows(30)[0])
    (part,) = tmp_path.glob("*.parquet")
    data = part.read_bytes()
    part.write_bytes(data[: len(data) // 2])
    with pytest.raises(ZsclipError, match=f"{part.name} .* bytes, not the {len(data):,} written"):
        search_embeddings(tmp_path, np.ones(16))
    part.write_bytes(b"\0" * len(data))  # the right size, the wrong bytes
    with pytest.raises(ZsclipError, match=f"{part} is damaged .*export them again"):
        search_embeddings(tmp_path, np.ones(16))


def test_parquet_files_without_a_manifest_are_refused(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"path": ["a"]}), tmp_path / "part-00000.parquet")
    with pytest.raises(UsageError, match="without a valid manifest.json"):
        search_embeddings(tmp_path, np.ones(16))
