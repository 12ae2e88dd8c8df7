"""`zsclip classify ... --sort-into DIR [--mode copy|link|move] [--dry-run] [--resume]` and `--report DIR`
through the real CLI (issue 13, sections 3 and 4). Runs once the lead has wired the options to zsclip.classify.sort and
zsclip.classify.gallery."""

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from zsclip.classify.sort import MANIFEST
from zsclip.cli import app

from .test_gallery import Page

runner = CliRunner()
CLASSES = "red,green,blue"


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def photos(tmp_path) -> Path:
    """Six small generated images, two of them with one name in different folders."""
    root = tmp_path / "photos"
    (root / "more").mkdir(parents=True)
    colors = [(220, 20, 20), (20, 200, 30), (30, 40, 220), (200, 60, 60), (40, 40, 200), (90, 210, 90)]
    for i, color in enumerate(colors):
        name = ("more/" if i >= 3 else "") + ("same.png" if i in (0, 3) else f"img{i}.png")
        Image.new("RGB", (40, 32), color).save(root / name)
    return root


def common(photos, model):
    return ["classify", photos, "-c", CLASSES, "-m", model, "-t", "photo"]


def files(root: Path) -> list[bytes]:
    return sorted(p.read_bytes() for p in root.rglob("*") if p.is_file() and p.suffix == ".png")


def manifest(root: Path) -> list[dict]:
    return list(csv.DictReader((root / MANIFEST).open(newline="", encoding="utf-8", errors="surrogateescape")))


@pytest.mark.parametrize("mode", ["copy", "link", "move"])
def test_sort_into_puts_each_image_in_its_label_folder(tiny_model_dir, photos, tmp_path, mode):
    before = files(photos)
    out = tmp_path / "sorted"
    result = run(*common(photos, tiny_model_dir), "--sort-into", out, "--mode", mode)
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]  # the predictions as ever
    rows = manifest(out)
    assert len(rows) == len(records) == 6
    by_source = {r["source"]: r for r in rows}
    for record in records:
        row = by_source[os.path.abspath(record["path"])]
        assert row["label"] == record["label"] and Path(row["destination"]).parent.name == record["label"]
    names = sorted(Path(r["destination"]).name for r in rows)
    assert "same.png" in names and "same_1.png" in names  # the second one did not overwrite the first
    assert files(out) == before
    assert files(photos) == ([] if mode == "move" else before)
    assert f"sorted 6 images into {out}" in result.stderr


def test_threshold_sends_doubtful_images_to_unknown(tiny_model_dir, photos, tmp_path):
    out = tmp_path / "sorted"
    result = run(*common(photos, tiny_model_dir), "--sort-into", out, "--threshold", "0.999")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [MANIFEST, "unknown"]
    assert all(r["abstained"] == "True" for r in manifest(out))


def test_dry_run_prints_the_plan_and_touches_nothing(tiny_model_dir, photos, tmp_path):
    before = files(photos)
    out = tmp_path / "sorted"
    result = run(*common(photos, tiny_model_dir), "--sort-into", out, "--mode", "move", "--dry-run")
    assert result.exit_code == 0, result.output
    plan = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(plan) == 6 and len({r["destination"] for r in plan}) == 6
    assert not out.exists() and files(photos) == before


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--sort-into", "{tmp}/s", "--mode", "shuffle"], "--mode shuffle"),
        (["--sort-into", "{photos}/sorted"], "is inside"),
        (["--mode", "move"], "--mode needs --sort-into"),
        (["--dry-run"], "--dry-run needs --sort-into"),
        (["--report", "{photos}/more"], "no zsclip gallery"),
    ],
)
def test_mistakes_are_usage_errors(tiny_model_dir, photos, tmp_path, extra, message):
    args = [a.replace("{tmp}", str(tmp_path)).replace("{photos}", str(photos)) for a in extra]
    result = run(*common(photos, tiny_model_dir), *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.output


def test_an_earlier_sort_needs_resume(tiny_model_dir, photos, tmp_path):
    out = tmp_path / "sorted"
    assert run(*common(photos, tiny_model_dir), "--sort-into", out).exit_code == 0
    again = run(*common(photos, tiny_model_dir), "--sort-into", out)
    assert again.exit_code == 2 and "--resume" in again.stderr
    moved = run(*common(photos, tiny_model_dir), "--sort-into", out, "--mode", "move", "--resume")
    assert moved.exit_code == 2 and "mode" in moved.stderr
    (photos / "new.png").write_bytes((photos / "img1.png").read_bytes())
    resumed = run(*common(photos, tiny_model_dir), "--sort-into", out, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert len(manifest(out)) == 7  # only the new image was added


def test_unsafe_label_names_become_safe_folders(tiny_model_dir, photos, tmp_path):
    out = tmp_path / "sorted"
    result = run(*common(photos, tiny_model_dir)[:2], "-c", "a/b,..,CON", "-m", tiny_model_dir, "-t", "photo",
                 "--sort-into", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    folders = {r["label"]: r["folder"] for r in manifest(out)}
    expected = {"a/b": "a_b", "..": "label-", "CON": "CON_"}  # '..' has nothing left: label-<hash>
    assert folders and all(folders[label].startswith(expected[label]) for label in folders)
    assert {p.name for p in out.iterdir() if not p.name.startswith(".")} == {MANIFEST, *folders.values()}
    assert "label 'a/b' is in folder a_b" in result.stderr or "a/b" not in folders


def test_report_writes_a_gallery(tiny_model_dir, photos, tmp_path):
    (photos / "broken.jpg").write_bytes(b"not an image")
    report = tmp_path / "report"
    result = run(*common(photos, tiny_model_dir), "--report", report, "--threshold", "0.5")
    assert result.exit_code == 0, result.output
    page = Page(report / "gallery.html")
    figures = sum(len(s["figures"]) for s in page.sections)
    assert figures == 6
    assert sum(int(s["count"]) for s in page.sections if s["id"] != "skipped") == 6
    assert page.sections[-1]["id"] == "skipped" and int(page.sections[-1]["count"]) == 1
    assert all(page.target(link).exists() for link in page.links)
    assert (report / "labels.png").exists()


def test_report_and_move_together_show_the_images_where_they_went(tiny_model_dir, photos, tmp_path):
    out, report = tmp_path / "sorted", tmp_path / "report"
    result = run(*common(photos, tiny_model_dir), "--sort-into", out, "--mode", "move", "--report", report)
    assert result.exit_code == 0, result.output
    page = Page(report / "gallery.html")
    assert page.figures and all(page.target(f["href"]).is_relative_to(out.resolve()) for f in page.figures)
    assert all(page.target(f["src"]).exists() for f in page.figures)


@pytest.mark.slow
def test_kill_9_during_a_move_then_resume_loses_nothing_and_doubles_nothing(tiny_model_dir, tmp_path):
    src, out = tmp_path / "src", tmp_path / "sorted"
    rng = np.random.default_rng(0)
    for i in range(240):
        (src / f"d{i % 4}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(src / f"d{i % 4}" / f"{i:04d}.png")
    before = files(src)
    cmd = [sys.executable, "-m", "zsclip", *map(str, common(src, tiny_model_dir)), "--sort-into", str(out),
           "--mode", "move", "--batch-size", "4", "-q"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (out / MANIFEST).exists() or (out / MANIFEST).read_bytes().count(b"\n") < 60:
        assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()}"
        assert time.monotonic() < deadline
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 0 < len(files(out)) < 240
    resumed = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert files(src) == [] and files(out) == before
    rows = manifest(out)
    assert len(rows) == 240 and len({r["source"] for r in rows}) == 240
    assert sorted((out / r["destination"]).read_bytes() for r in rows) == before


@pytest.mark.slow
def test_a_move_killed_between_files_keeps_every_record_of_output_after_resume(tiny_model_dir, photos, tmp_path):
    out, results = tmp_path / "sorted", tmp_path / "records.jsonl"
    args = [*map(str, common(photos, tiny_model_dir)), "-o", str(results), "--sort-into", str(out), "--mode", "move"]
    killer = (
        "import os, signal, sys\nimport zsclip.classify.sort.placing as s\nseen = []\n"
        "def hook(point):\n    seen.append(point)\n"
        "    if seen.count('placed') == 3:\n        os.kill(os.getpid(), signal.SIGKILL)\n"
        "s.hook = hook\nfrom zsclip.cli import main\nsys.argv = ['zsclip', *sys.argv[1:]]\nmain()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    killed = subprocess.run([sys.executable, "-c", killer, *args, "--workers", "0"], env=env, capture_output=True)
    assert killed.returncode == -signal.SIGKILL
    resumed = run(*args, "--resume", "--workers", "0")
    assert resumed.exit_code == 0, resumed.output
    records = [json.loads(line) for line in results.read_text().splitlines()]
    assert len(records) == len({r["path"] for r in records}) == 6
    assert len(manifest(out)) == 6 and files(photos) == []


def test_names_that_are_not_utf8_are_sorted_and_shown(tiny_model_dir, tmp_path):
    src = tmp_path / "odd"
    src.mkdir()
    for i, name in enumerate([b"a.png", b"b\xff.png", b"c.png"]):
        Image.new("RGB", (24, 24), (80 * i, 90, 200)).save(os.fsencode(src) + b"/" + name)
    out, report = tmp_path / "sorted", tmp_path / "gallery"
    args = ["classify", src, "-c", CLASSES, "-m", tiny_model_dir, "-t", "photo", "--workers", "0"]
    result = run(*args, "--sort-into", out, "--mode", "move", "--report", report)
    assert result.exit_code == 0, result.output
    moved = sorted(p.name.encode("utf-8", "surrogateescape") for p in out.rglob("*.png"))
    assert moved == [b"a.png", b"b\xff.png", b"c.png"] and not list(src.iterdir())
    assert len(manifest(out)) == 3 and (report / "gallery.html").is_file()
    again = run(*args, "--sort-into", out, "--mode", "move", "--resume")  # the manifest reads back
    assert again.exit_code == 0 or "no image" in again.stderr


@pytest.mark.parametrize("mode", ["copy", "move"])
def test_the_sort_folder_reached_through_a_symlink_in_the_source_is_never_entered(tiny_model_dir, tmp_path, mode):
    """Issue 21 item 4: `inbox/archive -> ../sorted`; a --resume walked DIR and sorted its files again."""
    inbox, out = tmp_path / "inbox", tmp_path / "sorted"
    inbox.mkdir()
    for i in range(4):
        Image.new("RGB", (24, 24), (60 * i, 90, 20)).save(inbox / f"img{i:04d}.png")
    out.mkdir()
    (inbox / "archive").symlink_to("../sorted")
    first = run(*common(inbox, tiny_model_dir), "--sort-into", out, "--mode", mode)
    assert first.exit_code == 0, first.output
    sorted_before = sorted(str(p.relative_to(out)) for p in out.rglob("*.png"))
    assert len(sorted_before) == 4 and len(manifest(out)) == 4
    Image.new("RGB", (24, 24), (1, 2, 250)).save(inbox / "new.png")
    again = run(*common(inbox, tiny_model_dir), "--sort-into", out, "--mode", mode, "--resume")
    assert again.exit_code == 0, again.output
    rows = manifest(out)
    assert len(rows) == 5 and all((out / r["destination"]).exists() for r in rows)
    after = sorted(str(p.relative_to(out)) for p in out.rglob("*.png"))
    assert set(sorted_before) < set(after) and len(after) == 5  # nothing renamed, nothing sorted twice


def test_resume_of_a_finished_move_with_an_empty_inbox_is_a_no_op(tiny_model_dir, photos, tmp_path):
    """Issue 21 item 15: 'no images found', exit 2."""
    out = tmp_path / "sorted"
    assert run(*common(photos, tiny_model_dir), "--sort-into", out, "--mode", "move").exit_code == 0
    assert not list(photos.rglob("*.png"))
    again = run(*common(photos, tiny_model_dir), "--sort-into", out, "--mode", "move", "--resume")
    assert again.exit_code == 0, again.output
    assert "nothing new to sort" in again.stderr and len(manifest(out)) == 6
    other = run(*common(photos, tiny_model_dir), "--sort-into", out, "--mode", "copy", "--resume")
    assert other.exit_code == 2 and "mode" in other.stderr  # the options are still checked
