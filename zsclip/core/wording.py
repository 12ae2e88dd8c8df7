"""Counts and phrases as messages say them: '1 image', '2 images', 'all 12 files were skipped'."""


def plural(n: int, word: str, many: str | None = None) -> str:
    """'1 image', '2 images', '1,204 images' (`many`: an irregular plural)."""
    return f"{n:,} {word if n == 1 else many or word + 's'}"


def all_skipped(n: int) -> str:
    """'its one file was skipped' / 'all 12 files were skipped'."""
    return "its one file was skipped" if n == 1 else f"all {n:,} files were skipped"
