"""Supervised workers: a file that kills its decoder or stalls is skipped with a reason, the run goes on, in order."""

import faulthandler
import os
import signal
import threading
import time

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import zsclip.pipeline.images
import zsclip.pipeline.workers
from zsclip.cli import app
from zsclip.engines import ReadOptions
from zsclip.pipeline.images import iter_batches
from zsclip.pipeline.sources import expand_sources
from zsclip.pipeline.workers import run_tasks


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
    real = zsclip.pipeline.images.load_image

    def crashing(path, *a, **kw):  # a segfault in a C decoder, as some corrupt files cause
        if path.endswith("04.png"):
            _segfault()
        return real(path, *a, **kw)

    monkeypatch.setattr(zsclip.pipeline.images, "load_image", crashing)
    batches = list(iter_batches(expand_sources([tmp_path]), _to_tensor, batch_size=3, workers=2))
    paths = [os.path.basename(p) for b in batches for p in b.paths]
    assert paths == [f"{i:02d}.png" for i in range(10) if i != 4]
    [(path, reason)] = [s for b in batches for s in b.skipped]
    assert path.endswith("04.png") and "SIGSEGV" in reason


def _to_tensor(im):
    return np.zeros((4, 4, 3), dtype=np.uint8)


def test_cli_skips_a_file_that_hangs_and_finishes(tiny_model_dir, tmp_path, monkeypatch):
    for i in range(6):
        Image.new("RGB", (40, 40), (40 * i, 0, 0)).save(tmp_path / f"{i}.png")
    real = zsclip.pipeline.images.load_image

    def hanging(path, *a, **kw):  # a read that never returns (a hung network mount)
        if path.endswith("3.png"):
            time.sleep(3600)
        return real(path, *a, **kw)

    monkeypatch.setattr(zsclip.pipeline.images, "load_image", hanging)
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
    import zsclip.pipeline.gpu_decode
    from zsclip.engines import embed_stream

    for i in range(5):
        Image.new("RGB", (40, 40), (0, 50 * i, 0)).save(tmp_path / f"{i}.jpg")
    real = zsclip.pipeline.gpu_decode._read

    def hanging(path):
        if path.endswith("2.jpg"):
            time.sleep(3600)
        return real(path)

    monkeypatch.setattr(zsclip.pipeline.gpu_decode, "_read", hanging)
    model = zsclip.load_model(str(tiny_model_dir))
    start = time.monotonic()
    batches = list(
        embed_stream(model, expand_sources([tmp_path]), ReadOptions(batch_size=2, decode_on="device", file_timeout=0.5))
    )
    assert time.monotonic() - start < 20
    assert [os.path.basename(p) for b in batches for p in b.paths] == ["0.jpg", "1.jpg", "3.jpg", "4.jpg"]
    [(path, reason)] = [s for b in batches for s in b.skipped]
    assert path.endswith("2.jpg") and "--file-timeout" in reason


def test_unreadable_file_reason(tmp_path, monkeypatch):
    from zsclip.pipeline.images import SkipFile, load_image

    path = tmp_path / "secret.png"
    Image.new("RGB", (4, 4)).save(path)
    monkeypatch.setattr(os, "access", lambda p, mode: False)  # as for a non-root user on a chmod 000 file
    with pytest.raises(SkipFile, match="permission denied"):
        load_image(str(path), _to_tensor)


def test_pixels_from_worker_processes_are_the_pixels_decoded_here(tmp_path):
    for i in range(7):
        Image.new("RGB", (16, 16), (30 * i, 0, 255 - 30 * i)).save(tmp_path / f"{i}.png")

    def preprocess(im):
        return np.asarray(im, dtype=np.uint8)

    sources = expand_sources([tmp_path])
    here = np.concatenate([b.pixels for b in iter_batches(sources, preprocess, batch_size=3, workers=0)])
    workers = np.concatenate([b.pixels for b in iter_batches(sources, preprocess, batch_size=3, workers=2)])
    assert here.dtype == np.uint8 and here.shape == (7, 16, 16, 3)
    assert np.array_equal(here, workers)


def test_without_workers_a_blocking_read_is_cut_off_too(tmp_path, monkeypatch):
    for i in range(4):
        Image.new("RGB", (8, 8)).save(tmp_path / f"{i}.png")
    real = zsclip.pipeline.images.load_image

    def blocking(path, *a, **kw):
        if path.endswith("1.png"):
            time.sleep(3600)  # interrupted by the per-file alarm, as a blocking read() would be
        return real(path, *a, **kw)

    monkeypatch.setattr(zsclip.pipeline.images, "load_image", blocking)
    start = time.monotonic()
    batches = list(iter_batches(expand_sources([tmp_path]), _to_tensor, batch_size=2, workers=0, file_timeout=0.5))
    assert time.monotonic() - start < 10
    assert [os.path.basename(p) for b in batches for p in b.paths] == ["0.png", "2.png", "3.png"]
    [(path, reason)] = [s for b in batches for s in b.skipped]
    assert path.endswith("1.png") and "--file-timeout" in reason


def test_a_large_batch_of_long_paths_on_one_worker_does_not_hang(tmp_path):
    # Tasks and results both far over a pipe's 64 KB buffer: the worker, busy sending a result, must never wait
    # on a parent that is itself stuck sending the next task (issue 12, item 1).
    sources = [(str(tmp_path / ("d" * 200) / f"{i:05d}.png"), True) for i in range(3000)]
    batches = _within(60, lambda: list(iter_batches(sources, None, batch_size=1000, workers=1)))
    assert [len(b.skipped) for b in batches] == [1000, 1000, 1000]
    assert [p for b in batches for p, _ in b.skipped] == [p for p, _ in sources]


def test_big_results_with_tasks_queued_behind_them_come_back_in_order():
    tasks = [[f"{t:02d}-{i:04d}-" + "p" * 300 for i in range(500)] for t in range(6)]
    results = _within(60, lambda: list(run_tasks(tasks, _echo, workers=2, item_timeout=30)))
    assert [done for done, _ in results] == [[x * 2 for x in t] for t in tasks]


def _echo(items, failed, mark):
    return [x * 2 for x in items], failed


def _within(seconds, fn):
    """fn() on a daemon thread: a hang fails the test instead of stalling the suite."""
    out = []
    thread = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert out, f"no result within {seconds} s (a hang)"
    return out[0]


def test_an_abandoned_reader_thread_leaves_its_replacement_alone():
    # A slow item gets its thread abandoned; the replacement then meets a hung item. The abandoned thread, once
    # awake, must neither go on with its tasks nor overwrite the replacement's heartbeat, which would hide the
    # hung item from the time limit (issue 12, item 2).
    release, calls = threading.Event(), []

    def work(items, failed, mark):
        out = []
        for n, item in enumerate(items):
            mark(n)
            calls.append(item)
            if item == "slow":  # wakes while the replacement is on the hung item, before that one times out
                time.sleep(1.6)
            if item == "hung":
                release.wait(30)
            out.append(item)
        return out, [item for item, _ in failed]

    start = time.monotonic()
    try:
        results = _within(60, lambda: list(run_tasks([["a", "slow", "hung", "b"]], work, workers=1, item_timeout=1,
                                                      threads=True)))  # fmt: skip
        elapsed = time.monotonic() - start
        time.sleep(2)  # the abandoned thread wakes in this time; it must do nothing more
    finally:
        release.set()
    assert results == [(["a", "b"], ["slow", "hung"])]
    assert elapsed < 10
    assert calls.count("b") == 1 and calls.count("hung") == 1


def test_device_path_times_out_a_hung_read_after_a_slow_one(tiny_model_dir, tmp_path, monkeypatch):
    import zsclip
    import zsclip.pipeline.gpu_decode

    for i in range(5):
        Image.new("RGB", (40, 40), (0, 50 * i, 0)).save(tmp_path / f"{i}.jpg")
    real, release, reads = zsclip.pipeline.gpu_decode._read, threading.Event(), []

    def reading(path):
        reads.append(os.path.basename(path))
        if path.endswith("1.jpg"):
            time.sleep(1.6)
        if path.endswith("2.jpg"):
            release.wait(30)
        return real(path)

    monkeypatch.setattr(zsclip.pipeline.gpu_decode, "_read", reading)
    model = zsclip.load_model(str(tiny_model_dir))
    start = time.monotonic()
    try:
        sources = expand_sources([tmp_path])
        batches = _within(60, lambda: list(zsclip.pipeline.gpu_decode.iter_device_batches(
            sources, model.preprocess, model.device, batch_size=5, threads=1, file_timeout=1)))  # fmt: skip
        elapsed = time.monotonic() - start
        time.sleep(2)
    finally:
        release.set()
    assert elapsed < 10
    assert [os.path.basename(p) for b in batches for p in b.paths] == ["0.jpg", "3.jpg", "4.jpg"]
    skipped = [(os.path.basename(p), r) for b in batches for p, r in b.skipped]
    assert [p for p, _ in skipped] == ["1.jpg", "2.jpg"] and all("--file-timeout" in r for _, r in skipped)
    assert reads.count("3.jpg") == 1 and reads.count("2.jpg") == 1


_FSIZE_SET: list[int] = []


def test_stopping_early_returns_at_once_with_workers_busy():
    # The caller stops (--strict, an error, Ctrl-C) while workers are on slow items: their work is not wanted,
    # so stopping must not wait on each of them in turn (it took 2 s per busy worker).
    tasks = [["a"], ["hang"], ["hang"], ["hang"], ["p" * 200_000], ["b"]]

    def first_then_stop():
        results = run_tasks(tasks, _work, workers=3)
        first = next(results)
        start = time.monotonic()
        results.close()
        return first, time.monotonic() - start

    first, stopping = _within(30, first_then_stop)
    assert first == (["aa"], []) and stopping < 1.5


def test_device_path_times_out_a_slow_cpu_fallback_decode(tiny_model_dir, tmp_path, monkeypatch):
    # Files the device decoder does not take (here a PNG) are decoded on the CPU in the consuming thread; the
    # per-file limit must hold there too.
    import zsclip
    import zsclip.pipeline.gpu_decode

    for name in ("0.jpg", "1.png", "2.jpg"):
        Image.new("RGB", (40, 40), (0, 90, 0)).save(tmp_path / name)
    real = zsclip.pipeline.gpu_decode.load_image

    def slow(path, *a, **kw):
        if path.endswith("1.png"):
            time.sleep(20)  # a decode that takes far too long; interrupted by the per-file alarm
        return real(path, *a, **kw)

    monkeypatch.setattr(zsclip.pipeline.gpu_decode, "load_image", slow)
    model = zsclip.load_model(str(tiny_model_dir))
    start = time.monotonic()
    batches = list(zsclip.pipeline.gpu_decode.iter_device_batches(expand_sources([tmp_path]), model.preprocess,
    model.device,
                                                  batch_size=3, threads=1, file_timeout=1))  # fmt: skip
    assert time.monotonic() - start < 10
    assert [os.path.basename(p) for b in batches for p in b.paths] == ["0.jpg", "2.jpg"]
    [(path, reason)] = [s for b in batches for s in b.skipped]
    assert path.endswith("1.png") and "--file-timeout" in reason


def test_device_path_survives_an_unreadable_store(tiny_model_dir, tmp_path, monkeypatch):
    # As on the CPU path: a store that cannot be read costs a re-encode, never the run.
    import sqlite3

    import zsclip
    from zsclip.engines import embed_stream
    from zsclip.store.embeddings import ImageStore

    for i in range(3):
        Image.new("RGB", (40, 40), (0, 0, 80 * i)).save(tmp_path / f"{i}.jpg")

    def locked(self, path):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(ImageStore, "lookup", locked)
    model = zsclip.load_model(str(tiny_model_dir))
    batches = list(embed_stream(model, expand_sources([tmp_path]), ReadOptions(batch_size=2, decode_on="device")))
    assert [os.path.basename(p) for b in batches for p in b.paths] == ["0.jpg", "1.jpg", "2.jpg"]
