"""Crash safety with real processes: kill -9 and --resume, eval resuming from the image store, two runs on one
cache at once, and a cache that is corrupt, from a newer version, or on a full disk."""

import gc
import json
import os
import resource
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from zsclip.cli import app
from zsclip.store.cache import DB_NAME, Cache


def _zsclip(*args, **kw) -> list[str]:
    return [sys.executable, "-m", "zsclip", *map(str, args)]


def _images(root: Path, n: int, classes: int = 1, size: int = 96) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / f"class{i % classes}" if classes > 1 else root
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / f"{i:04d}.jpg")
    return root


def _records(path: Path) -> dict[str, dict]:
    return {r["path"]: r for r in map(json.loads, path.read_text().splitlines())}


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()}"
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def _lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def _same_records(a: dict[str, dict], b: dict[str, dict]) -> None:
    assert a.keys() == b.keys()
    for path, ra in a.items():
        rb = b[path]
        assert (ra["label"], [t["label"] for t in ra["top_k"]]) == (rb["label"], [t["label"] for t in rb["top_k"]])
        assert ra["prob"] == pytest.approx(rb["prob"], abs=2e-6)


def _workers_of(marker: str) -> list[int]:
    """Processes whose command line holds `marker` (the run's unique output path)."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                pids.append(int(pid))
        except OSError:
            pass
    return pids


@pytest.mark.slow
def test_kill_9_then_resume_gives_the_records_of_an_uninterrupted_run(tiny_model_dir, tmp_path):
    images = _images(tmp_path / "images", 400)
    common = ["classify", images, "-c", "cat,dog,bird", "-m", tiny_model_dir, "-t", "photo", "--batch-size", "2",
              "--workers", "1", "--no-store", "-q"]  # fmt: skip
    reference = tmp_path / "reference.jsonl"
    subprocess.run(_zsclip(*common, "-o", reference), check=True, capture_output=True)

    out = tmp_path / "out.jsonl"
    partial = Path(f"{out}.partial")
    proc = subprocess.Popen(_zsclip(*common, "-o", out), stderr=subprocess.PIPE, text=True)
    _kill_when(proc, lambda: _lines(partial) >= 60)
    assert not out.exists()
    assert 60 <= _lines(partial) < 400
    time.sleep(0.5)
    assert _workers_of(str(out)) == [], "decoding workers outlived the killed run"
    with open(partial, "a") as f:  # a record torn in half by the kill
        f.write('{"path": "' + str(images / "0399.jpg")[:20])

    again = subprocess.run(_zsclip(*common, "-o", out), capture_output=True, text=True)
    assert again.returncode == 2 and "add --resume to continue it" in again.stderr

    changed = subprocess.run(_zsclip(*common[:2], "-c", "cat,dog", *common[4:], "-o", out, "--resume"),
                             capture_output=True, text=True)  # fmt: skip
    assert changed.returncode == 2 and "other classes" in changed.stderr

    kept = _lines(partial)
    resumed = subprocess.run(_zsclip(*common[:-1], "-o", out, "--resume"), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{kept} images already classified" in resumed.stderr
    assert f"classified {400 - kept} images ({kept} more from the interrupted run)" in resumed.stderr
    assert not partial.exists() and not Path(f"{out}.partial.json").exists()
    _same_records(_records(out), _records(reference))
    assert len(out.read_text().splitlines()) == 400


def _csv(path: Path) -> dict[str, dict]:
    import csv

    rows = list(csv.DictReader(path.open()))
    return {r["path"]: {"label": r["label"], "prob": float(r["prob"]),
                        "top_k": [{"label": r["label_1"]}, {"label": r["label_2"]}]} for r in rows}  # fmt: skip


def test_csv_resume_after_a_failed_run_and_of_a_finished_file(tiny_model_dir, tmp_path):
    images = _images(tmp_path / "images", 12)
    args = ["classify", str(images), "-c", "a,b", "-m", str(tiny_model_dir), "-t", "photo", "--batch-size", "2"]
    reference = tmp_path / "reference.csv"
    assert CliRunner().invoke(app, [*args, "-o", str(reference)]).exit_code == 0

    out = tmp_path / "out.csv"
    partial = Path(f"{out}.partial")
    (images / "0005x.jpg").write_bytes(b"not a jpeg")  # --strict stops the run here, after 0000-0005
    failures = tmp_path / "failures.jsonl"
    stopped = CliRunner().invoke(app, [*args, "-o", str(out), "--strict", "--failures", str(failures)])
    assert stopped.exit_code == 1
    assert [json.loads(line)["path"] for line in failures.read_text().splitlines()] == [str(images / "0005x.jpg")]
    assert f"kept 6 finished records in {partial} (--resume)" in stopped.stderr
    assert not out.exists() and len(partial.read_text().splitlines()) == 7  # header + 6
    with partial.open("a") as f:
        f.write(str(images / "0006.jpg") + ",a,0.5")  # a row torn by a crash
    (images / "0005x.jpg").unlink()

    other = CliRunner().invoke(app, [*args[:2], "-c", "a,c", *args[4:], "-o", str(out), "--resume"])
    assert other.exit_code == 2 and "was made with other classes" in other.stderr
    resumed = CliRunner().invoke(app, [*args, "-o", str(out), "--resume"])
    assert resumed.exit_code == 0, resumed.stderr
    assert "6 images already classified" in resumed.stderr
    assert out.read_text().splitlines()[0] == reference.read_text().splitlines()[0]
    assert len(out.read_text().splitlines()) == 13
    _same_records(_csv(out), _csv(reference))
    again = CliRunner().invoke(app, [*args, "-o", str(out), "--resume"])
    assert again.exit_code == 0 and "complete already" in again.stderr


def test_resume_needs_an_output_file_in_a_resumable_format(tiny_model_dir, tmp_path):
    images = _images(tmp_path / "images", 2)
    base = ["classify", str(images), "-c", "a,b", "-m", str(tiny_model_dir)]
    no_output = CliRunner().invoke(app, [*base, "--resume"])
    assert no_output.exit_code == 2 and "--resume needs --output FILE" in no_output.stderr
    table = CliRunner().invoke(app, [*base, "--resume", "-o", str(tmp_path / "x.txt"), "-f", "table"])
    assert table.exit_code == 2 and "table output cannot be continued" in table.stderr


@pytest.mark.slow
def test_eval_killed_mid_run_resumes_from_the_image_store(tiny_model_dir, tmp_path):
    data = _images(tmp_path / "data", 300, classes=3)
    cache = tmp_path / "cache"
    env = {**os.environ, "ZSCLIP_CACHE_DIR": str(cache)}
    common = ["eval", data, "-m", tiny_model_dir, "-t", "photo", "--batch-size", "2", "--workers", "1", "-q"]
    subprocess.run(_zsclip(*common, "--no-store", "--report", tmp_path / "ref"), check=True, env=env,
                   capture_output=True)  # fmt: skip

    def stored() -> int:
        try:
            with sqlite3.connect(cache / DB_NAME, timeout=1) as conn:
                return conn.execute("SELECT count(*) FROM image_embeddings").fetchone()[0]
        except sqlite3.Error:
            return 0

    proc = subprocess.Popen(_zsclip(*common, "--report", tmp_path / "run"), env=env, stderr=subprocess.PIPE, text=True)
    _kill_when(proc, lambda: stored() >= 40)
    before = stored()
    assert 40 <= before < 300
    loud = [a for a in common if a != "-q"]  # the reuse count is part of the summary -q leaves out
    resumed = subprocess.run(_zsclip(*loud, "--report", tmp_path / "run"), env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    reused = int(resumed.stderr.split(" of 300 image embeddings came from the image store")[0].split()[-1])
    assert reused >= before
    ref = json.loads((tmp_path / "ref" / "metrics.json").read_text())
    run = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert run["metrics"] == pytest.approx(ref["metrics"])
    predicted = [line.split(",")[:3] for line in (tmp_path / "run" / "predictions.csv").read_text().splitlines()]
    assert predicted == [
        line.split(",")[:3] for line in (tmp_path / "ref" / "predictions.csv").read_text().splitlines()
    ]
    assert not list((tmp_path / "run").glob("*.tmp")) and not list((tmp_path / "run").glob(".*"))


@pytest.mark.slow
def test_two_classifies_and_an_eval_share_one_cache_at_once(tiny_model_dir, tmp_path):
    data = _images(tmp_path / "data", 240, classes=3)
    env = {**os.environ, "ZSCLIP_CACHE_DIR": str(tmp_path / "cache")}
    common = ["-m", tiny_model_dir, "--batch-size", "4", "--workers", "1", "-q"]
    runs = {
        "a": _zsclip("classify", data, "-c", "red,green,blue", "-t", "photo", *common, "-o", tmp_path / "a.jsonl"),
        "b": _zsclip("classify", data, "-c", "cat,dog", "-t", "imagenet7", *common, "-o", tmp_path / "b.jsonl"),
        "e": _zsclip("eval", data, "-t", "photo", *common, "--report", tmp_path / "e"),
    }
    procs = {k: subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True) for k, cmd in runs.items()}
    errors = {k: p.communicate(timeout=300)[1] for k, p in procs.items()}
    for k, p in procs.items():
        assert p.returncode == 0, errors[k]
        assert "locked" not in errors[k] and "Traceback" not in errors[k]
    # The same runs alone, without the store, give the same answers: nothing was mixed up in between.
    for k in ("a", "b"):
        alone = tmp_path / f"{k}-alone.jsonl"
        cmd = [c if c != str(tmp_path / f"{k}.jsonl") else str(alone) for c in runs[k]] + ["--no-store"]
        subprocess.run(cmd, env=env, check=True, capture_output=True)
        _same_records(_records(tmp_path / f"{k}.jsonl"), _records(alone))
    with sqlite3.connect(tmp_path / "cache" / DB_NAME) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT count(DISTINCT path) FROM image_embeddings").fetchone()[0] == 240


@pytest.mark.parametrize("damage", ["garbage", "truncated", "newer"])
def test_a_damaged_cache_is_moved_aside_and_rebuilt(tiny_model_dir, tmp_path, private_cache, damage):
    images = _images(tmp_path / "images", 4)
    args = ["classify", str(images), "-c", "a,b", "-m", str(tiny_model_dir), "-t", "photo", "-f", "jsonl"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0
    gc.collect()  # connections the first run left in reference cycles; a real process has exited by now
    db = private_cache / DB_NAME
    if damage == "garbage":
        db.write_bytes(b"this is not a database" * 100)
    elif damage == "truncated":
        db.write_bytes(db.read_bytes()[:1500])
    else:
        conn = sqlite3.connect(db)
        conn.execute("PRAGMA user_version = 99")
        conn.close()
    second = CliRunner().invoke(app, args)
    assert second.exit_code == 0, second.stderr
    assert "moved it to" in second.stderr and "starting a new one" in second.stderr
    assert second.stdout == first.stdout
    assert list(private_cache.glob(f"{DB_NAME}.corrupt-*"))
    third = CliRunner().invoke(app, args)
    assert third.exit_code == 0 and "moved" not in third.stderr


def test_a_full_disk_while_storing_warns_and_the_run_goes_on(tiny_model_dir, tmp_path, monkeypatch):
    from zsclip.store.embeddings import ImageStore

    images = _images(tmp_path / "images", 10)
    calls = []

    def full(self, rows):
        calls.append(len(rows))
        if len(calls) > 1:
            raise sqlite3.OperationalError("database or disk is full")
        return real(self, rows)

    real = ImageStore.put
    monkeypatch.setattr(ImageStore, "put", full)
    args = ["classify", str(images), "-c", "a,b", "-m", str(tiny_model_dir), "-t", "photo", "-f", "jsonl"]
    result = CliRunner().invoke(app, [*args, "--batch-size", "3"])
    assert result.exit_code == 0, result.stderr
    assert len(result.stdout.splitlines()) == 10
    assert "is full" in result.stderr and "no longer stored" in result.stderr
    assert len(calls) == 2  # storing stopped after the failure
    monkeypatch.setattr(ImageStore, "put", real)
    with sqlite3.connect(Cache().path) as conn:  # what was stored before is kept
        assert conn.execute("SELECT count(*) FROM image_embeddings").fetchone()[0] == 3


def test_a_full_disk_while_writing_output_is_one_line_and_keeps_the_records(tiny_model_dir, tmp_path):
    images = _images(tmp_path / "images", 400, size=40)
    out = tmp_path / "out.jsonl"
    cmd = _zsclip("classify", images, "-c", "a,b", "-m", tiny_model_dir, "-t", "photo", "-o", out, "-q",
                  "--no-store", "--batch-size", "8")  # fmt: skip

    def limit():  # what a full disk looks like to a writer: EFBIG past 40 KB (Python ignores SIGXFSZ)
        resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, 40_000))

    # The text cache is written first, as on a disk that filled up later; it stays readable throughout.
    subprocess.run([*cmd[:4], str(next(images.iterdir())), *cmd[5:11], "-q"], check=True, capture_output=True)

    run = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=limit)
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    assert "the disk is full" in run.stderr and "--resume" in run.stderr
    kept = _lines(Path(f"{out}.partial"))
    assert kept > 10
    resumed = subprocess.run([*cmd, "--resume"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert len(out.read_text().splitlines()) == 400


def test_running_out_of_memory_is_one_line_and_keeps_finished_records(tiny_model_dir, tmp_path, monkeypatch):
    import torch

    import zsclip.pipeline.encode

    images = _images(tmp_path / "images", 12)
    out = tmp_path / "out.jsonl"
    args = ["classify", str(images), "-c", "a,b", "-m", str(tiny_model_dir), "-t", "photo", "-o", str(out),
            "--batch-size", "4"]  # fmt: skip
    real, calls = zsclip.pipeline.encode.encode_images, []

    def oom(model, pixels):
        calls.append(1)
        if len(calls) == 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(model, pixels)

    monkeypatch.setattr(zsclip.pipeline.encode, "encode_images", oom)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: out of memory (CUDA out of memory.")
    assert "Traceback" not in result.stderr
    assert _lines(Path(f"{out}.partial")) == 4
    monkeypatch.setattr(zsclip.pipeline.encode, "encode_images", real)
    resumed = CliRunner().invoke(app, [*args, "--resume"])
    assert resumed.exit_code == 0 and len(out.read_text().splitlines()) == 12


def _blake(data: bytes) -> str:
    import hashlib

    return hashlib.blake2b(data, digest_size=16).hexdigest()


@pytest.mark.slow
@pytest.mark.parametrize("with_output", [False, True], ids=["sort", "sort+output"])
@pytest.mark.parametrize("mode", ["copy", "link", "move"])
def test_kill_9_at_random_moments_of_a_sort_then_resume_loses_and_doubles_nothing(
    tiny_model_dir, tmp_path, mode, with_output
):
    """Issue 21: random kill points in a real `classify --sort-into` (and --output), then --resume until it
    finishes; every image is in DIR exactly once (checksums), the manifest names each one with its content
    hash, the sources are as the mode says, and the output has one record per image."""
    import csv
    import random

    rng = random.Random(f"{mode}-{with_output}")
    inbox = _images(tmp_path / "inbox", 120, classes=3, size=40)
    originals = {p: p.read_bytes() for p in inbox.rglob("*.jpg")}
    out, results = tmp_path / "sorted", tmp_path / "labels.csv"
    args = ["classify", inbox, "-c", "cat,dog,car", "-m", tiny_model_dir, "-t", "photo", "--sort-into", out,
            "--mode", mode, "--batch-size", "4", "--workers", "1", "-q"]  # fmt: skip
    if with_output:
        args += ["-o", results]
    manifest = out / "manifest.csv"
    for round_ in range(4):
        extra = ["--resume"] if manifest.exists() else []
        proc = subprocess.Popen(_zsclip(*args, *extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        want = 15 * round_ + rng.randint(1, 12)
        deadline = time.monotonic() + 120
        while proc.poll() is None and _lines(manifest) <= want and time.monotonic() < deadline:
            time.sleep(0.002)
        time.sleep(rng.random() * 0.02)  # somewhere inside the steps of the next image
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    final = subprocess.run(_zsclip(*args, "--resume"), capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr
    with open(manifest, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    placed = sorted((out / r["destination"]).read_bytes() for r in rows)
    assert placed == sorted(originals.values()), "an image was lost or sorted twice"
    in_dir = sorted(p.read_bytes() for p in out.rglob("*.jpg") if not p.name.startswith("."))
    assert in_dir == sorted(originals.values())
    assert all(_blake((out / r["destination"]).read_bytes()) == r["content_hash"] for r in rows)
    assert not list(out.rglob(".zsclip-*.tmp")) and not (out / ".zsclip-sort.lock").exists()
    left = {p: p.read_bytes() for p in inbox.rglob("*.jpg")}
    assert left == ({} if mode == "move" else originals)
    if with_output:
        with open(results, newline="", encoding="utf-8") as f:
            records = [r["path"] for r in csv.DictReader(f)]
        assert sorted(records) == sorted(map(str, originals)), "a record was lost or written twice"
