import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from zsclip.core.errors import UsageError
from zsclip.pipeline.images import SkipFile, iter_batches, load_image, to_rgb
from zsclip.pipeline.sources import expand_sources, first_image, walk


def _preprocess(im: Image.Image) -> np.ndarray:
    return np.asarray(im.resize((8, 8)), dtype=np.uint8)


def _png(path: Path, color=(255, 0, 0), size=(10, 10), mode="RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path, format="PNG")
    return path


def _tree(root: Path) -> Path:
    _png(root / "b.png")
    _png(root / "a.png")
    _png(root / "sub" / "c.png")
    _png(root / "sub" / "deeper" / "d.png")
    _png(root / ".hidden.png")
    _png(root / ".git" / "e.png")
    (root / "notes.txt").write_text("not an image")
    (root / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    return root


def _all(sources, **kw):
    batches = list(iter_batches(sources, _preprocess, **kw))
    return [p for b in batches for p in b.paths], [s for b in batches for s in b.skipped]


def test_walk_is_sorted_recursive_and_skips_hidden(tmp_path):
    root = _tree(tmp_path / "imgs")
    paths = [os.path.relpath(p, root) for p, _ in walk(expand_sources([root]))]
    assert paths == ["a.png", "b.png", "notes.txt", "sub/c.png", "sub/deeper/d.png"]
    flat = [os.path.relpath(p, root) for p, _ in walk(expand_sources([root]), recursive=False)]
    assert flat == ["a.png", "b.png", "notes.txt"]


def test_non_images_are_ignored_and_images_without_extension_are_found(tmp_path):
    root = _tree(tmp_path / "imgs")
    Image.new("RGB", (5, 5)).save(root / "photo_no_ext", format="JPEG")
    paths, skipped = _all(expand_sources([root]), batch_size=2, workers=0)
    names = [os.path.relpath(p, root) for p in paths]
    assert names == ["a.png", "b.png", "photo_no_ext", "sub/c.png", "sub/deeper/d.png"]
    assert skipped == []


def test_symlink_loops_terminate_and_links_are_followed(tmp_path):
    root = _tree(tmp_path / "imgs")
    (root / "sub" / "loop").symlink_to(root, target_is_directory=True)
    (root / "link.png").symlink_to(root / "a.png")
    paths = [os.path.relpath(p, root) for p, _ in walk(expand_sources([root]))]
    assert "link.png" in paths
    assert len(paths) == len(set(paths)) == 6


def test_bad_files_become_skip_records(tmp_path):
    root = tmp_path / "imgs"
    _png(root / "good.png")
    (root / "empty.jpg").write_bytes(b"")
    (root / "text.jpg").write_text("<html>not an image</html>")
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(root / "noise.png")
    good = (root / "noise.png").read_bytes()
    (root / "noise.png").unlink()
    (root / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "dangling.png").symlink_to(root / "missing.png")
    paths, skipped = _all(expand_sources([root]), batch_size=3, workers=0)
    assert [os.path.basename(p) for p in paths] == ["good.png"]
    reasons = {os.path.basename(p): r for p, r in skipped}
    assert reasons["empty.jpg"] == "empty file"
    assert reasons["text.jpg"] == "not a recognised image format"
    assert reasons["dangling.png"] == "broken symbolic link"
    assert reasons["truncated.png"].startswith("cannot decode")


def test_workers_keep_walk_order(tmp_path):
    root = tmp_path / "imgs"
    for i in range(23):
        _png(root / f"{i:03d}.png", color=(i, 0, 0))
    sources = expand_sources([root])
    serial, _ = _all(sources, batch_size=4, workers=0)
    parallel, _ = _all(sources, batch_size=4, workers=2)
    assert parallel == serial and len(serial) == 23
    pixels = np.concatenate([b.pixels for b in iter_batches(sources, _preprocess, batch_size=4, workers=2)])
    assert pixels[:, 0, 0, 0].tolist() == list(range(23))


def test_list_file_and_missing_paths(tmp_path):
    a = _png(tmp_path / "x" / "a.png")
    listing = tmp_path / "list.txt"
    listing.write_text(f"{a}\n\n# comment\n")
    assert expand_sources([f"@{listing}"]) == [(str(a), True)]
    with pytest.raises(UsageError, match="nope: no such file or directory"):
        expand_sources([str(tmp_path / "nope")])


def test_first_image_is_none_for_a_folder_without_images(tmp_path):
    (tmp_path / "readme.txt").write_text("hi")
    assert first_image(expand_sources([tmp_path])) is None


def test_transparency_goes_onto_white_and_16_bit_is_rescaled(tmp_path):
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert to_rgb(rgba).getpixel((0, 0)) == (255, 255, 255)
    deep = Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16))
    assert to_rgb(deep).getpixel((0, 0)) == (255, 255, 255)
    assert to_rgb(Image.new("L", (2, 2), 7)).getpixel((0, 0)) == (7, 7, 7)


def test_exif_rotation_is_applied(tmp_path):
    im = Image.new("RGB", (20, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    path = tmp_path / "rotated.jpg"
    im.save(path, exif=exif)
    assert load_image(str(path), lambda im: torch.tensor(im.size)).tolist() == [10, 20]


def test_not_a_regular_file(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(SkipFile, match="not a regular file"):
        load_image(str(fifo), _preprocess)
