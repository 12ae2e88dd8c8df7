"""The reading limits (batch size, workers, pixels, time per file) and their checks, importable without torch so
the CLI rejects a bad value before any model loads."""

from __future__ import annotations

from zsclip.core.errors import UsageError

DEFAULT_MAX_PIXELS = 250_000_000  # above a 200-megapixel phone photo; a decompression bomb is far beyond
DEFAULT_FILE_TIMEOUT = 60.0  # seconds one file may take to read and decode


def check_limits(
    batch_size: int | None, workers: int | None, max_pixels: int | None, file_timeout: float | None
) -> None:
    """The usage errors of the reading options (None: the default, always valid)."""
    if batch_size is not None and batch_size < 1:
        raise UsageError(f"--batch-size {batch_size}: must be at least 1")
    if workers is not None and workers < 0:
        raise UsageError(f"--workers {workers}: must be 0 or more")
    if max_pixels is not None and max_pixels < 1:
        raise UsageError(f"--max-pixels {max_pixels}: must be at least 1")
    if file_timeout is not None and not 0 < file_timeout < 10**6:  # nan and inf too: a timer cannot take them
        raise UsageError(f"--file-timeout {file_timeout:g}: give a number of seconds above 0 (such as 60)")


def check_ranking(top_k: int | None, threshold: float | None) -> None:
    """The usage errors of --top-k and --threshold that need no class list."""
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise UsageError(f"--threshold {threshold}: must be a probability between 0 and 1")
    if top_k is not None and top_k < 1:
        raise UsageError(f"--top-k {top_k}: must be at least 1")
