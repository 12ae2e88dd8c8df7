"""Retrieval: images into the image-embedding store and found by text or image (`search`: index, search), and
embeddings handed over as Parquet shards (`parquet`). Recall@K on a captions set is in zsclip.evaluate.recall."""
