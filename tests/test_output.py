"""Output: record order, output locations, odd file names, resume by resolved path, file modes, the table.

These drive the Python API and the CLI as it is; tests/test_cli_output.py holds those that need the CLI to call
the checks before loading the model."""

import csv
import errno
import io
import json
import os
import re
import stat
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import zsclip
from zsclip.classify import output
from zsclip.classify.predict import Prediction, Skipped
from zsclip.cli import app
from zsclip.core import atomic
from zsclip.core.errors import UsageError, ZsclipError

ODD = os.fsdecode(b"caf\xe9-latin1.png")  # a Latin-1 name: not UTF-8, so Python holds it as 'caf\udce9...'


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _png(path: Path, value: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(path, format="PNG")
    return path


@pytest.fixture
def imgs(tmp_path) -> Path:
    """Six images with a damaged file in the middle of the first batch of four."""
    root = tmp_path / "imgs"
    for i in range(6):
        _png(root / f"{i}.png", i)
    (root / "1b.png").write_bytes(b"not a png")  # walk order: 0, 1, 1b, 2 | 3, 4, 5
    return root


def _classify_args(model_dir: Path, *extra) -> list:
    return ["-c", "a,b", "-m", model_dir, "-t", "photo", "--workers", "0", "-q", *extra]


# -- 13: records in walk order ----------------------------------------------------------------------------
@pytest.mark.parametrize("options", [{"workers": 0}, {"workers": 1}, {"workers": 0, "decode_on": "device"}])
def test_a_skip_record_comes_where_its_file_is_in_the_walk(tiny_model_dir, imgs, options):
    model = zsclip.load_model(str(tiny_model_dir))
    clf = zsclip.build_classifier(model, ["a", "b"], "photo")
    records = list(zsclip.classify(model, clf, imgs, batch_size=4, store=False, **options))
    names = [Path(r.path).name for r in records]
    assert names == ["0.png", "1.png", "1b.png", "2.png", "3.png", "4.png", "5.png"]
    assert isinstance(records[2], Skipped) and all(isinstance(r, Prediction) for i, r in enumerate(records) if i != 2)


def test_strict_keeps_the_images_before_the_bad_file(tiny_model_dir, imgs, tmp_path):
    out = tmp_path / "out.csv"
    result = run("classify", imgs, *_classify_args(tiny_model_dir, "--batch-size", "4", "--strict", "-o", out))
    assert result.exit_code == 1 and "1b.png" in result.stderr
    rows = Path(f"{out}.partial").read_text().splitlines()
    assert [Path(r.split(",")[0]).name for r in rows[1:]] == ["0.png", "1.png"]


# -- 5: a run that ends with no finished record -----------------------------------------------------------
def test_discard_after_abandon_leaves_nothing_and_raises_nothing(tmp_path):
    out = output.OutputFile(tmp_path / "out.jsonl", "jsonl", {"top_k": 1})
    out.abandon()
    out.discard()
    out.discard()
    assert sorted(os.listdir(tmp_path)) == []


@pytest.mark.parametrize("how", ["all bad", "strict on the first file"])
def test_a_run_without_a_finished_record_is_one_line_and_leaves_no_partial(tiny_model_dir, tmp_path, how):
    root = tmp_path / "imgs"
    root.mkdir()
    (root / "0.png").write_bytes(b"broken")
    if how != "all bad":
        _png(root / "1.png")
    out = tmp_path / "out.jsonl"
    args = ["classify", root, *_classify_args(tiny_model_dir, "-o", out, *(["--strict"] if how != "all bad" else []))]
    result = run(*args)
    assert result.exit_code == 1, result.output
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert not Path(f"{out}.partial").exists() and not Path(f"{out}.partial.json").exists()
    (root / "0.png").unlink()
    _png(root / "0.png")
    assert run(*args).exit_code == 0  # not blocked by a leftover .partial
    assert out.exists()


def test_ctrl_c_exits_130_and_leaves_no_empty_partial(tiny_model_dir, imgs, tmp_path, monkeypatch):

    def interrupted(*args, **kw):
        raise KeyboardInterrupt
        yield

    monkeypatch.setattr(sys.modules["zsclip.classify.run"], "classify", interrupted)
    out = tmp_path / "out.csv"
    result = run("classify", imgs, *_classify_args(tiny_model_dir, "-o", out))
    assert result.exit_code == 130 and "Traceback" not in result.output  # saying "interrupted": test_cli_output
    assert not Path(f"{out}.partial").exists() and not Path(f"{out}.partial.json").exists()


# -- 6: file names that are not UTF-8 ----------------------------------------------------------------------
@pytest.fixture
def odd_imgs(tmp_path) -> Path:
    root = tmp_path / "odd"
    _png(root / "a.png", 1)
    _png(root / ODD, 2)
    (root / "z.png").write_bytes(b"broken")  # --strict stops here, after both images
    return root


def _strict_stdout_stream() -> io.TextIOWrapper:
    return io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict", newline="")


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl", "table"])
def test_writers_write_a_non_utf8_name_to_a_strict_stream(fmt):
    stream = _strict_stdout_stream()
    writer = output.make_writer(fmt, stream, 1)
    writer.write(Prediction(f"/x/{ODD}", "a", 0.5, [{"label": "a", "prob": 0.5}]))
    writer.close()
    data = stream.buffer.getvalue()
    if fmt == "csv":  # the name's bytes as they are
        assert os.fsencode(ODD) in data
    elif fmt == "table":
        assert b"caf\\xe9-latin1.png" in data
    else:  # valid UTF-8 with a \udcXX escape that reads back to the same str
        records = json.loads(data) if fmt == "json" else [json.loads(line) for line in data.splitlines()]
        assert records[0]["path"] == f"/x/{ODD}"
        data.decode("utf-8")


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_non_utf8_name_is_written_to_the_output_file_and_resume_knows_it(tiny_model_dir, odd_imgs, tmp_path, fmt):
    out = tmp_path / f"out.{fmt}"
    stopped = run("classify", odd_imgs, *_classify_args(tiny_model_dir, "--strict", "-o", out))
    assert stopped.exit_code == 1 and "z.png" in stopped.stderr, stopped.output
    (odd_imgs / "z.png").unlink()
    resumed = run("classify", odd_imgs, *_classify_args(tiny_model_dir, "-o", out, "--resume"))
    assert resumed.exit_code == 0, resumed.output
    data = out.read_bytes()
    assert data.count(b"latin1.png") == 1 and data.count(b"a.png") == 1
    if fmt == "jsonl":
        assert {json.loads(line)["path"] for line in data.decode("utf-8").splitlines()} == {
            str(odd_imgs / "a.png"),
            str(odd_imgs / ODD),
        }
    else:
        assert os.fsencode(str(odd_imgs / ODD)) in data


def test_a_non_utf8_name_on_stdout(tiny_model_dir, odd_imgs):
    (odd_imgs / "z.png").unlink()
    result = run("classify", odd_imgs, *_classify_args(tiny_model_dir), "-f", "csv")
    assert result.exit_code == 0, result.output
    assert os.fsencode(str(odd_imgs / ODD)) in result.stdout_bytes


def test_display_path_is_one_line():
    assert output.display_path(f"a\nb/{ODD}") == "a\\nb/caf\\xe9-latin1.png"


# -- 14: resume compares resolved paths -------------------------------------------------------------------
def test_resume_with_the_folder_spelled_otherwise_redoes_nothing(tiny_model_dir, imgs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (imgs / "1b.png").rename(imgs / "9bad.png")  # the last file: --strict stops after 0-3 at least
    out = tmp_path / "out.jsonl"
    first = run("classify", "imgs", *_classify_args(tiny_model_dir, "--batch-size", "4", "--strict", "-o", out))
    assert first.exit_code == 1 and len(Path(f"{out}.partial").read_text().splitlines()) >= 4
    (imgs / "9bad.png").unlink()
    monkeypatch.chdir(imgs)  # another working directory, and the folder spelled another way
    resumed = run("classify", "../imgs/", *_classify_args(tiny_model_dir, "-o", out, "--resume"))
    assert resumed.exit_code == 0, resumed.output
    names = [Path(json.loads(line)["path"]).name for line in out.read_text().splitlines()]
    assert sorted(names) == [f"{i}.png" for i in range(6)]


def test_done_paths_compare_resolved_paths(tmp_path, monkeypatch):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    monkeypatch.chdir(tmp_path)
    done = output.DonePaths(["real/a.png", "./b.png"], cwd=str(tmp_path))
    assert "./real/a.png" in done and str(tmp_path / "link" / "a.png") in done and "b.png" in done
    assert "real/b.png" not in done and len(done) == 2


def test_output_file_records_the_inputs_and_refuses_other_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "imgs").mkdir()
    (tmp_path / "other").mkdir()
    out = output.OutputFile(tmp_path / "out.jsonl", "jsonl", {"top_k": 1}, inputs=["imgs"])
    out.stream.write('{"path": "imgs/a.png"}\n')
    out.abandon()
    same = output.OutputFile(tmp_path / "out.jsonl", "jsonl", {"top_k": 1}, resume=True, inputs=["./imgs/"])
    assert "imgs/a.png" in same.done
    same.abandon()
    with pytest.raises(UsageError, match="other inputs"):
        output.OutputFile(tmp_path / "out.jsonl", "jsonl", {"top_k": 1}, resume=True, inputs=["other"])


# -- 4: output locations ----------------------------------------------------------------------------------
def test_output_file_checks(tmp_path):
    assert output.check_output_file("-") is None and output.check_output_file(None) is None
    with pytest.raises(UsageError, match="--output .*: is a folder"):
        output.check_output_file(tmp_path)
    (tmp_path / "file").write_text("")
    with pytest.raises(UsageError, match="is a file, not a folder"):
        output.check_output_file(tmp_path / "file" / "out.csv")
    with pytest.raises(UsageError, match="not a regular file"):
        output.check_output_file("/dev/null")
    assert output.check_output_file(tmp_path / "new" / "dir" / "out.csv") == tmp_path / "new" / "dir" / "out.csv"
    assert not (tmp_path / "new").exists()  # checked, not created


def test_output_dir_checks(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(UsageError, match="--report .*file: is a file, not a folder"):
        output.check_output_dir(tmp_path / "file", "--report")
    assert output.check_output_dir(tmp_path / "a" / "b", "--report") == tmp_path / "a" / "b"


def test_a_read_only_location_is_a_usage_error(tmp_path, monkeypatch):
    def read_only(*args, **kw):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(UsageError, match=r"--output .*out.csv: cannot write in .*\(Read-only file system\)"):
        output.check_output_file(tmp_path / "out.csv")
    with pytest.raises(UsageError, match="Read-only file system"):
        output.check_output_dir(tmp_path / "report", "--report")


def test_output_and_failures_into_missing_folders(tiny_model_dir, imgs, tmp_path):
    out = tmp_path / "new" / "dir" / "out.csv"
    failures = tmp_path / "other" / "f.jsonl"
    result = run("classify", imgs, *_classify_args(tiny_model_dir, "-o", out, "--failures", failures))
    assert result.exit_code == 0, result.output
    assert len(out.read_text().splitlines()) == 7 and "1b.png" in failures.read_text()


def test_output_into_a_folder_fails_before_classifying(tiny_model_dir, imgs, tmp_path, monkeypatch):

    monkeypatch.setattr(sys.modules["zsclip.classify.run"], "classify", lambda *a, **k: pytest.fail("classified"))
    result = run("classify", imgs, *_classify_args(tiny_model_dir, "-o", tmp_path))
    assert result.exit_code == 2 and "is a folder" in result.stderr and result.stderr.count("\n") == 1
    assert not Path(f"{tmp_path}.partial").exists()


def test_data_shapes_into_a_file_is_a_usage_error(tmp_path):
    (tmp_path / "out").write_text("")
    result = run("data", "shapes", tmp_path / "out", "--n", "2", "--eval-per-class", "0")
    assert result.exit_code == 2 and "is a file, not a folder" in result.stderr


def test_train_into_a_file_is_a_usage_error_before_any_work(tmp_path):
    from zsclip.train import TrainConfig, train

    (tmp_path / "model").write_text("")
    with pytest.raises(UsageError, match="--output .*model: is a file, not a folder"):
        train(TrainConfig(data=str(tmp_path / "missing.csv"), config="tiny-vit", output=str(tmp_path / "model")))


def test_report_into_a_file_is_a_usage_error(tmp_path):
    from zsclip.evaluate.report import write_comparison, write_report

    (tmp_path / "report").write_text("")
    with pytest.raises(UsageError, match="--report .*report: is a file"):
        write_report(None, tmp_path / "report", None)
    with pytest.raises(UsageError, match="--report .*report: is a file"):
        write_comparison(None, tmp_path / "report", {})


def test_a_write_that_fails_late_is_one_line(tmp_path, monkeypatch):
    from zsclip.classify.output import writing

    with pytest.raises(ZsclipError, match=r"^--report r: the disk is full"), writing("r", "--report"):
        raise OSError(errno.ENOSPC, "No space left on device")


# -- 23: -o - and a format that contradicts the file name -------------------------------------------------
def test_plan_output():
    assert output.plan_output("-", None).output is None
    assert output.plan_output("-", None, terminal=True).fmt == "table"
    assert output.plan_output("x.csv", None).fmt == "csv"
    assert output.plan_output("x.txt", "table").fmt == "table"
    with pytest.raises(UsageError, match=r"--format jsonl but --output x.csv .*name the file x.jsonl"):
        output.plan_output("x.csv", "jsonl")
    with pytest.raises(UsageError, match="--resume needs --output FILE"):
        output.plan_output("-", "jsonl", resume=True)
    with pytest.raises(UsageError, match="both"):
        output.plan_output("x.csv", None, failures="./x.csv")


# -- 20: file modes ---------------------------------------------------------------------------------------
def test_atomic_writes_honour_the_umask_and_the_replaced_files_mode(tmp_path):
    old = os.umask(0o027)
    try:
        atomic.write_text(tmp_path / "new.txt", "x")
        assert stat.S_IMODE((tmp_path / "new.txt").stat().st_mode) == 0o640
        (tmp_path / "old.txt").write_text("")
        os.chmod(tmp_path / "old.txt", 0o604)
        atomic.write_text(tmp_path / "old.txt", "y")
        assert stat.S_IMODE((tmp_path / "old.txt").stat().st_mode) == 0o604
    finally:
        os.umask(old)
    atomic.write_text(tmp_path / "umask022.txt", "z")
    assert stat.S_IMODE((tmp_path / "umask022.txt").stat().st_mode) == 0o666 & ~old


# -- issue 13 section 5: the table ------------------------------------------------------------------------
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _table(stream, paths: list[str]) -> list[str]:
    writer = output.make_writer("table", stream, 2)
    for p in paths:
        writer.write(
            Prediction(
                p, "blue cross", 0.91, [{"label": "blue cross", "prob": 0.91}, {"label": "red star", "prob": 0.05}]
            )
        )
    writer.close()
    return _ANSI.sub("", stream.getvalue()).splitlines()


def test_table_in_a_narrow_terminal_shortens_paths_from_the_left_on_one_line(monkeypatch):
    monkeypatch.setenv("COLUMNS", "60")
    paths = [f"/data/photos/holiday/{name}" for name in ("a_very_long_folder_name/blue_cross_0001.png", "b/x.png")]
    lines = _table(_Terminal(), paths)
    assert lines[0].strip() == "under /data/photos/holiday/"
    rows = [line for line in lines if ".png" in line]
    assert len(rows) == 2 and all(len(line) <= 60 for line in lines)
    assert re.search(r" …\S*/blue_cross_0001.png │", rows[0]) and " b/x.png " in rows[1]


def test_table_in_a_pipe_is_one_line_per_image_whatever_the_length(monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    long = "examples/shapes/" + "deep/" * 20 + "blue_cross.png"
    lines = _table(io.StringIO(), [long, "examples/shapes/red_star.png"])
    rows = [line for line in lines if ".png" in line]
    assert len(rows) == 2
    assert "deep/" * 20 + "blue_cross.png" in rows[0] and "examples/shapes" not in rows[0]


def test_common_root_and_shorten_left():
    assert output.common_root(["a/b/c.png", "a/b/d/e.png"]) == "a/b"
    assert output.common_root(["/x/a.png", "y/b.png"]) == "" and output.common_root(["a.png"]) == ""
    assert output.shorten_left("abcdef", 4) == "…def" and output.shorten_left("abc", 4) == "abc"


def test_eval_report_with_a_non_utf8_name(tiny_model_dir, tmp_path):
    data = tmp_path / "data"
    _png(data / "a" / "0.png", 0)
    _png(data / "b" / ODD, 1)
    report = tmp_path / "report"
    result = run("eval", data, "-m", tiny_model_dir, "-t", "photo", "--workers", "0", "-q", "--report", report)
    assert result.exit_code == 0, result.output
    assert os.fsencode(str(data / "b" / ODD)) in (report / "predictions.csv").read_bytes()
    assert "caf\\xe9-latin1.png" in (report / "report.html").read_text(encoding="utf-8")


def test_csv_resume_cuts_a_row_torn_inside_a_quoted_path_with_a_line_break(tmp_path):
    from zsclip.classify.output import OutputFile, make_writer
    from zsclip.classify.predict import Prediction

    out = tmp_path / "o.csv"
    settings = {"format": "csv", "top_k": 1}
    first = OutputFile(out, "csv", settings, inputs=[str(tmp_path)])
    writer = make_writer("csv", first.stream, 1)
    for name in ["a.png", "b\ny.png"]:
        writer.write(Prediction(str(tmp_path / name), "red", 0.9, [{"label": "red", "prob": 0.9}]))
    first.stream.flush()
    first.abandon()
    data = first.partial.read_bytes()
    first.partial.write_bytes(data[: data.index(b"b\ny.png") + 2])  # killed right after the quoted line break
    resumed = OutputFile(out, "csv", settings, resume=True, inputs=[str(tmp_path)])
    assert len(resumed.done) == 1 and str(tmp_path / "a.png") in resumed.done
    resumed.abandon()
    rows = list(csv.reader(io.StringIO(resumed.partial.read_text(), newline="")))
    assert len(rows) == 2 and rows[1][0].endswith("a.png")


def test_a_json_output_file_of_a_failed_run_is_valid_json_and_says_how_to_go_on(tiny_model_dir, tmp_path):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    Image.new("RGB", (16, 16), (200, 0, 0)).save(imgs / "a.png")
    (imgs / "b.png").write_bytes(b"junk")
    Image.new("RGB", (16, 16), (0, 0, 200)).save(imgs / "c.png")
    out = tmp_path / "o.json"
    args = ["classify", str(imgs), "-c", "red,blue", "-m", str(tiny_model_dir), "-t", "photo", "--workers", "0"]
    failed = run(*args, "-o", out, "--strict")
    assert failed.exit_code == 1
    partial = tmp_path / "o.json.partial"
    assert [r["path"] for r in json.loads(partial.read_text())] == [str(imgs / "a.png")]
    assert "cannot be resumed" in failed.stderr and "(--resume)" not in failed.stderr
    again = run(*args, "-o", out)
    assert again.exit_code == 2 and "move or delete it" in again.stderr


def test_a_killed_writers_temporary_file_is_swept_by_the_next_write_and_a_live_ones_kept(tmp_path):
    """kill -9 runs no cleanup: the temporary file of a dead writer stays until a later process writes into its
    folder. A live writer's temporary (it holds the file's lock) and files that are not zsclip's are kept."""
    import subprocess
    import time

    from zsclip.core.atomic import atomic_open

    target = tmp_path / "clf.safetensors"
    writer = (
        "import os, sys, time\nfrom zsclip.core.atomic import atomic_open\nwith atomic_open(sys.argv[1], 'wb') as f:\n"
    )
    killed = subprocess.run(
        [sys.executable, "-c", writer + "    f.write(b'half'); f.flush(); os.kill(os.getpid(), 9)\n", str(target)]
    )
    assert killed.returncode == -9
    assert len(list(tmp_path.glob(".clf.safetensors.zsclip-tmp.*"))) == 1 and not target.exists()
    live = subprocess.Popen(
        [sys.executable, "-c", writer + "    f.write(b'slow'); time.sleep(3)\n", str(tmp_path / "other.bin")]
    )
    deadline = time.monotonic() + 30
    while not list(tmp_path.glob(".other.bin.zsclip-tmp.*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    live_tmp = list(tmp_path.glob(".other.bin.zsclip-tmp.*"))
    assert len(live_tmp) == 1
    users = tmp_path / ".notes.pid1234.tmp"  # someone else's file, named like a temporary
    users.write_bytes(b"x")
    with atomic_open(target, "wb") as f:
        f.write(b"whole")
    assert target.read_bytes() == b"whole"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["clf.safetensors", live_tmp[0].name, users.name])
    assert live.wait(timeout=60) == 0 and (tmp_path / "other.bin").read_bytes() == b"slow"
