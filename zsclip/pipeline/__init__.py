"""Inputs to image embeddings: PATH arguments to files (`sources`), files to decoded, preprocessed batches with skip
records for bad files (`images`), supervised decoding workers (`workers`), JPEG decoding on the GPU
(`gpu_decode`) and batches to unit-norm embeddings (`encode`). zsclip.engines executes these stages."""
