"""Supervised workers: a file that kills its decoder or stalls is skipped with a reason, the run goes on, in order."""

import faulthandler
import os
import signal
import time

import pytest
from PIL import Image
from typer.testing import CliRunner

import zsclip.images
from zsclip.cli import app
from zsclip.images import iter_batches
from zsclip.sources import expand_sources
from zsclip.workers import run_tasks


def _work(items, failed, mark):
    out = []
    for n, item in enumerate(items):
        mark(n)
        if item == "crash":
            _segfault()
        if item == "hang":
            time.sleep(3600)
        out.append(item * 2)
    return out, [(item, reason) for item, reason in failed]


def _segfault():
    faulthandler.disable()  # pytest's handler would print the child's stack; the parent's report is the point
    os.kill(os.getpid(), signal.SIGSEGV)


def _tasks(n=12, size=3, bad=()):
    tasks = [[i * size + j for j in range(size)] for i in range(n)]
    for task_no, pos, what in bad:
        tasks[task_no][pos] = what
    return tasks


@pytest.mark.parametrize("threads", [False, True])
def test_results_come_back_in_task_order(threads):
    results = list(run_tasks(_tasks(), _work, workers=3, threads=threads))
    assert [r[0] for r in results] == [[x * 2 for x in t] for t in _tasks()]


def test_a_crashing_item_is_reported_and_the_rest_is_done():
    tasks = _tasks(bad=[(4, 1, "crash"), (9, 0, "crash")])
    results = list(run_tasks(tasks, _work, workers=2))
    assert len(results) == len(tasks)
    for task, (done, failed) in zip(tasks, results, strict=True):
        good = [x for x in task if isinstance(x, int)]
        assert done == [x * 2 for x in good]
        assert [item for item, _ in failed] == [x for x in task if x == "crash"]
    reasons = [r for _, failed in results for _, r in failed]
    assert len(reasons) == 2 and all("crashed" in r and "SIGSEGV" in r for r in reasons)


@pytest.mark.parametrize("threads", [False, True])
def test_a_stalled_item_is_skipped_after_the_time_limit(threads):
    tasks = _tasks(bad=[(2, 2, "hang")])
    start = time.monotonic()
    results = list(run_tasks(tasks, _work, workers=2, item_timeout=0.5, threads=threads))
    assert time.monotonic() - start < 15
    assert results[2][0] == [6 * 2, 7 * 2]
    [(item, reason)] = results[2][1]
    assert item == "hang" and "--file-timeout" in reason


def test_iter_batches_survive_a_decoder_crash(tmp_path, monkeypatch):
    for i in range(10):
        Image.new("RGB", (8, 8), (i, i, i)).save(tmp_path / f"{i:02d}.png")
    real = zsclip.images.load_image

    def crashing(path, *a, **kw):  # a segfault in a C decoder, as some corrupt files cause
        if path.endswith("04.png"):
            _segfault()
        return real(path, *a, **kw)

    monkeypatch.setattr(zsclip.images, "load_image", crashing)
    batches = list(iter_batches(expand_sources([tmp_path]), _to_tensor, batch_size=3, workers=2))
    paths = [os.path.basename(p) for b in batches for p in b.paths]
    assert paths == [f"{i:02d}.png" for i in range(10) if i != 4]
    [(path, reason)] = [s for b in batches for s in b.skipped]
    assert path.endswith("04.png") and "SIGSEGV" in reason


def _to_tensor(im):
    import torch

    return torch.zeros(3, 4, 4)


def test_cli_skips_a_file_that_hangs_and_finishes(tiny_model_dir, tmp_path, monkeypatch):
    for i in range(6):
        Image.new("RGB", (40, 40), (40 * i, 0, 0)).save(tmp_path / f"{i}.png")
    real = zsclip.images.load_image

    def hanging(path, *a, **kw):  # a read that never returns (a hung network mount)
        if path.endswith("3.png"):
            time.sleep(3600)
        return real(path, *a, **kw)

    monkeypatch.setattr(zsclip.images, "load_image", hanging)
    start = time.monotonic()
    result = CliRunner().invoke(
        app, ["classify", str(tmp_path), "-c", "a,b", "-m", str(tiny_model_dir), "-t", "photo", "-f", "jsonl",
              "--file-timeout", "1", "--workers", "1"],
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert time.monotonic() - start < 30
    assert len(result.stdout.splitlines()) == 5
    assert "3.png: took longer than 1 s to read and decode (--file-timeout)" in result.stderr


def test_max_pixels_skips_large_images_from_the_header(tiny_model_dir, tmp_path):
    Image.new("RGB", (100, 100)).save(tmp_path / "big.png")
    Image.new("RGB", (20, 20)).save(tmp_path / "small.png")
    result = CliRunner().invoke(
        app, ["classify", str(tmp_path), "-c", "a,b", "-m", str(tiny_model_dir), "-t", "photo", "-f", "jsonl",
              "--max-pixels", "5000"],
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert [os.path.basename(line.split('"')[3]) for line in result.stdout.splitlines()] == ["small.png"]
    assert "big.png: 100x100 = 10,000 pixels, over the --max-pixels limit of 5,000" in result.stderr


@pytest.mark.parametrize(
    "option, value, message",
    [("--max-pixels", "0", "--max-pixels 0: must be at least 1"), ("--file-timeout", "-1", "--file-timeout -1")],
)
def test_bad_limits_are_usage_errors(tiny_model_dir, tmp_path, option, value, message):
    Image.new("RGB", (20, 20)).save(tmp_path / "a.png")
    result = CliRunner().invoke(app, ["classify", str(tmp_path), "-c", "a,b", "-m", str(tiny_model_dir), option, value])
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_device_path_skips_a_read_that_hangs(tiny_model_dir, tmp_path, monkeypatch):
    import zsclip
    import zsclip.gpu
    from zsclip.encode import embed_stream

    for i in range(5):
        Image.new("RGB", (40, 40), (0, 50 * i, 0)).save(tmp_path / f"{i}.jpg")
    real = zsclip.gpu._read

    def hanging(path):
        if path.endswith("2.jpg"):
            time.sleep(3600)
        return real(path)

    monkeypatch.setattr(zsclip.gpu, "_read", hanging)
    model = zsclip.load_model(str(tiny_model_dir))
    start = time.monotonic()
    batches = list(embed_stream(model, expand_sources([tmp_path]), batch_size=2, decode_on="device", file_timeout=0.5))
    assert time.monotonic() - start < 20
    assert [os.path.basename(p) for b in batches for p in b.paths] == ["0.jpg", "1.jpg", "3.jpg", "4.jpg"]
    [(path, reason)] = [s for b in batches for s in b.skipped]
    assert path.endswith("2.jpg") and "--file-timeout" in reason


def test_unreadable_file_reason(tmp_path, monkeypatch):
    from zsclip.images import SkipFile, load_image

    path = tmp_path / "secret.png"
    Image.new("RGB", (4, 4)).save(path)
    monkeypatch.setattr(os, "access", lambda p, mode: False)  # as for a non-root user on a chmod 000 file
    with pytest.raises(SkipFile, match="permission denied"):
        load_image(str(path), _to_tensor)


def test_without_shared_memory_batches_cross_as_bytes_with_the_same_pixels(tmp_path, monkeypatch):
    import torch

    for i in range(7):
        Image.new("RGB", (16, 16), (30 * i, 0, 255 - 30 * i)).save(tmp_path / f"{i}.png")

    def preprocess(im):
        return torch.from_numpy(__import__("numpy").asarray(im, dtype="float32")).permute(2, 0, 1)

    sources = expand_sources([tmp_path])
    in_process = torch.cat([b.pixels for b in iter_batches(sources, preprocess, batch_size=3, workers=0)])
    shared = torch.cat([b.pixels for b in iter_batches(sources, preprocess, batch_size=3, workers=2)])

    def full(self):  # what torch raises when /dev/shm has no room
        raise RuntimeError("unable to write to file </torch_1_2_3>: No space left on device (28)")

    monkeypatch.setattr(torch.Tensor, "share_memory_", full)
    piped = torch.cat([b.pixels for b in iter_batches(sources, preprocess, batch_size=3, workers=2)])
    assert torch.equal(in_process, shared) and torch.equal(in_process, piped)


def test_without_workers_a_blocking_read_is_cut_off_too(tmp_path, monkeypatch):
    for i in range(4):
        Image.new("RGB", (8, 8)).save(tmp_path / f"{i}.png")
    real = zsclip.images.load_image

    def blocking(path, *a, **kw):
        if path.endswith("1.png"):
            time.sleep(3600)  # interrupted by the per-file alarm, as a blocking read() would be
        return real(path, *a, **kw)

    monkeypatch.setattr(zsclip.images, "load_image", blocking)
    start = time.monotonic()
    batches = list(iter_batches(expand_sources([tmp_path]), _to_tensor, batch_size=2, workers=0, file_timeout=0.5))
    assert time.monotonic() - start < 10
    assert [os.path.basename(p) for b in batches for p in b.paths] == ["0.png", "2.png", "3.png"]
    [(path, reason)] = [s for b in batches for s in b.skipped]
    assert path.endswith("1.png") and "--file-timeout" in reason
