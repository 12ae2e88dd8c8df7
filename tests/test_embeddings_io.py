"""Parquet embedding shards: written whole, searched chunk by chunk, same answer as brute force."""

from __future__ import annotations

import numpy as np
import pytest

from zsclip.embeddings_io import EmbeddingRow, export_embeddings, search_embeddings, write_embeddings
from zsclip.errors import UsageError, ZsclipError

pytest.importorskip("pyarrow")


def unit_rows(n: int, dim: int = 16, fingerprint: str = "fp-a", seed: int = 0) -> tuple[list[EmbeddingRow], np.ndarray]:
    vectors = np.random.RandomState(seed).randn(n, dim).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return [EmbeddingRow(f"img/{i}.jpg", f"h{i}", fingerprint, v) for i, v in enumerate(vectors)], vectors


def test_search_matches_brute_force_across_shards_and_row_groups(tmp_path):
    rows, vectors = unit_rows(20_000)
    assert write_embeddings(tmp_path / "emb", rows, shard_rows=7_000) == 20_000
    assert sorted(p.name for p in (tmp_path / "emb").iterdir()) == [f"part-0000{i}.parquet" for i in range(3)]
    query = np.random.RandomState(1).randn(16).astype(np.float32)
    hits = search_embeddings(tmp_path / "emb", query, top=10, fingerprint="fp-a")
    expected = np.argsort(-(vectors @ (query / np.linalg.norm(query))), kind="stable")[:10]
    assert [h.path for h in hits] == [f"img/{i}.jpg" for i in expected]
    assert [h.content_hash for h in hits] == [f"h{i}" for i in expected]
    assert hits[0].score == pytest.approx(float(vectors[expected[0]] @ query / np.linalg.norm(query)), abs=1e-6)


def test_a_rewrite_replaces_the_old_shards(tmp_path):
    write_embeddings(tmp_path, unit_rows(50)[0], shard_rows=10)
    write_embeddings(tmp_path, unit_rows(5, seed=2)[0], shard_rows=10)
    assert [p.name for p in tmp_path.iterdir()] == ["part-00000.parquet"]
    assert len(search_embeddings(tmp_path, np.ones(16), top=100)) == 5


def test_another_model_s_vectors_are_an_error_not_scores(tmp_path):
    write_embeddings(tmp_path, unit_rows(5, fingerprint="fp-b")[0])
    with pytest.raises(ZsclipError, match="fp-b"):
        search_embeddings(tmp_path, np.ones(16), fingerprint="fp-a")
    with pytest.raises(ZsclipError, match="16-d vectors, the query is 8-d"):
        search_embeddings(tmp_path, np.ones(8))


def test_an_empty_directory_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="no part-\\*.parquet"):
        search_embeddings(tmp_path, np.ones(4))


def test_export_writes_the_stream_s_vectors(tiny_model_dir, tmp_path):
    from PIL import Image

    from zsclip.encode import embed_stream
    from zsclip.models import load_model
    from zsclip.sources import expand_sources
    from zsclip.store import content_hash

    for i in range(5):
        Image.new("RGB", (32, 32), (40 * i, 0, 0)).save(tmp_path / f"{i}.png")
    clip = load_model(str(tiny_model_dir), device="cpu")
    sources = expand_sources([tmp_path])
    assert export_embeddings(clip, sources, tmp_path / "emb", store=False, workers=0) == 5
    batch = next(embed_stream(clip, sources, store=False, workers=0))
    hits = search_embeddings(tmp_path / "emb", batch.features[2].numpy(), top=1, fingerprint=clip.fingerprint)
    assert hits[0].path == str(tmp_path / "2.png")
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert hits[0].content_hash == content_hash(str(tmp_path / "2.png"))
