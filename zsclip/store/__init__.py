"""Everything zsclip keeps between runs, and the rule that says whether it is still true.

`identity` (when a file, folder or data set is still what it was), `cache` (the cache directory and its SQLite
file: text embeddings, file hashes), `shards` (tar members as addressable files with identities),
`embeddings` (the image-embedding store: one vector per file identity and model) and `snapshots` (a model's stored
vectors as one searchable matrix on disk)."""
