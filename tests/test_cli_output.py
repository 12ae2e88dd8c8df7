"""CLI behaviour of output locations and formats that needs the CLI to call zsclip.classify.output's checks before
loading the model (issue 12 items 4, 5, 14, 23). A Hugging Face model with no network (hf_cache) proves the
order: only loading it fails, so the output error must come first."""

import errno
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from zsclip.cli import app

NO_MODEL = "hf-hub:zsclip-tests/never-loaded"  # a valid spec; loading it fails (no network, empty hf_cache)


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture
def imgs(tmp_path) -> Path:
    root = tmp_path / "imgs"
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        for i in range(2):
            (root / cls).mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")
    return root


def _one_line_usage_error(result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
    for needle in needles:
        assert needle in result.stderr


@pytest.mark.parametrize(
    "option, message",
    [("-o", "--output"), ("--failures", "--failures")],
)
def test_an_existing_folder_as_output_file_is_refused_before_loading(hf_cache, imgs, tmp_path, option, message):
    target = tmp_path / "results"
    target.mkdir()
    result = run("classify", imgs, "-c", "a,b", "-m", NO_MODEL, option, target)
    _one_line_usage_error(result, message, "is a folder")
    assert not Path(f"{target}.partial").exists()


def test_a_read_only_location_is_refused_before_loading(hf_cache, imgs, tmp_path, monkeypatch):
    def read_only(*args, **kw):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    result = run("classify", imgs, "-c", "a,b", "-m", NO_MODEL, "-o", tmp_path / "out.csv")
    _one_line_usage_error(result, "--output", "Read-only file system")


def test_output_dash_is_stdout(tiny_model_dir, imgs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run("classify", imgs, "-c", "a,b", "-m", tiny_model_dir, "--workers", "0", "-q", "-o", "-")
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 4 and json.loads(result.stdout.splitlines()[0])["label"] in "ab"
    assert not (tmp_path / "-").exists()


def test_a_format_that_contradicts_the_file_name_is_refused(hf_cache, imgs, tmp_path):
    result = run("classify", imgs, "-c", "a,b", "-m", NO_MODEL, "-f", "jsonl", "-o", tmp_path / "x.csv")
    _one_line_usage_error(result, "--format jsonl", "x.csv")


@pytest.mark.parametrize("command", [["eval"], ["prompts", "compare"]])
def test_report_into_a_file_is_refused_before_loading(hf_cache, imgs, tmp_path, command):
    (tmp_path / "report").write_text("")
    result = run(*command, imgs, "-m", NO_MODEL, "--report", tmp_path / "report")
    _one_line_usage_error(result, "--report", "is a file, not a folder")


def test_train_into_a_file_is_refused(tmp_path):
    (tmp_path / "model").write_text("")
    result = run("train", tmp_path / "captions.csv", "--config", "tiny-vit", "--output", tmp_path / "model")
    _one_line_usage_error(result, "--output", "is a file, not a folder")


def test_ctrl_c_says_interrupted_and_exits_130(imgs, tmp_path, monkeypatch, tiny_model_dir):

    def interrupted(*args, **kw):
        raise KeyboardInterrupt
        yield

    monkeypatch.setattr(sys.modules["zsclip.classify.run"], "classify", interrupted)
    out = tmp_path / "out.csv"
    result = run("classify", imgs, "-c", "a,b", "-m", tiny_model_dir, "-q", "-o", out)
    assert result.exit_code == 130 and result.stderr.strip().endswith("error: interrupted")
    assert not Path(f"{out}.partial").exists()


def test_resume_with_other_inputs_is_refused(tiny_model_dir, imgs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (imgs / "b" / "9bad.png").write_bytes(b"broken")
    out = tmp_path / "out.jsonl"
    common = ["-c", "a,b", "-m", tiny_model_dir, "--workers", "0", "-q", "-o", out]
    assert run("classify", "imgs", *common, "--strict").exit_code == 1
    same = run("classify", "./imgs/a", "./imgs/b", *common, "--resume")
    _one_line_usage_error(same, "other inputs")
    (imgs / "b" / "9bad.png").unlink()
    assert run("classify", "./imgs/", *common, "--resume").exit_code == 0
    assert len(out.read_text().splitlines()) == 4


def test_a_second_run_writing_the_same_output_file_is_refused(tiny_model_dir, tmp_path):
    """Issue 21: two runs on one --output would interleave their records in FILE.partial; the second is refused
    (before its model loads), and the lock of a killed run is taken over by --resume."""
    from zsclip.classify.output import lock_path
    from zsclip.core.locks import Lock

    images = tmp_path / "imgs"
    images.mkdir()
    Image.new("RGB", (24, 24), (200, 0, 0)).save(images / "a.png")
    out = tmp_path / "labels.csv"
    args = ["classify", images, "-c", "red,blue", "-m", tiny_model_dir, "-t", "photo", "-o", out]
    with Lock(lock_path(out), "--output"):  # another zsclip writing the same file right now
        result = run(*args)
    assert result.exit_code == 2 and f"--output {out} is in use by another zsclip process" in result.stderr
    assert not out.exists()
    done = run(*args)
    assert done.exit_code == 0 and out.exists() and not lock_path(out).exists()


def test_resume_of_a_finished_output_checks_it_is_the_same_run(tiny_model_dir, tmp_path):
    """Issue 21 (found by the sweep): `--resume -o out.csv` of a finished out.csv said 'nothing to do' for any
    inputs and classes, so another folder's images were never classified."""
    a, b = tmp_path / "a", tmp_path / "b"
    for folder, colour in ((a, (200, 0, 0)), (b, (0, 0, 200))):
        folder.mkdir()
        Image.new("RGB", (24, 24), colour).save(folder / "x.png")
    out = tmp_path / "labels.csv"
    common = ["-m", tiny_model_dir, "-t", "photo", "-o", out]
    assert run("classify", a, "-c", "red,blue", *common).exit_code == 0
    same = run("classify", a, "-c", "red,blue", *common, "--resume")
    assert same.exit_code == 0 and "nothing to do" in same.stderr
    other = run("classify", b, "-c", "red,blue", *common, "--resume")
    assert other.exit_code == 2 and "is the finished output of another run" in other.stderr and "inputs" in other.stderr
    classes = run("classify", a, "-c", "red,green", *common, "--resume")
    assert classes.exit_code == 2 and "classes" in classes.stderr
    out.write_text(out.read_text() + "edited by hand\n")
    edited = run("classify", a, "-c", "red,blue", *common, "--resume")
    assert edited.exit_code == 2 and "changed since the run that wrote it finished" in edited.stderr
