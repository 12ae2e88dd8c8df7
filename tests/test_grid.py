"""`zsclip eval DATA... --model A --model B`: every pair once, results.jsonl as pairs finish, a leaderboard, a
failing pair reported without stopping the grid, and a rerun that fills in only what is missing."""

from __future__ import annotations

import csv
import json
import os
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from zsclip.cli import app

runner = CliRunner()


def _folder(root, colours):
    for name, rgb in colours.items():
        (root / name).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (32, 32), tuple(max(0, c - 20 * i) for c in rgb)).save(root / name / f"{i}.png")
    return root


@pytest.fixture
def grid_world(tmp_path, tiny_model_dir):
    a = _folder(tmp_path / "setA", {"red": (230, 20, 20), "blue": (20, 20, 230)})
    b = _folder(tmp_path / "setB", {"green": (20, 230, 20), "yellow": (230, 230, 20), "black": (5, 5, 5)})
    return tmp_path, [str(a), str(b)], ["shapes", str(tiny_model_dir)]


def _eval(*args):
    return runner.invoke(app, ["eval", *map(str, args), "-t", "photo", "--workers", "0"])


def test_grid_scores_every_pair_like_single_evals_and_writes_a_leaderboard(grid_world):
    tmp, datasets, models = grid_world
    report = tmp / "grid"
    result = _eval(*datasets, "-m", models[0], "-m", models[1], "--report", report, "-f", "json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [(r["model"], r["dataset"]) for r in rows] == [(m, d) for m in models for d in datasets]
    for r in rows:
        single = _eval(r["dataset"], "-m", r["model"], "-f", "json")
        assert json.loads(single.stdout)["metrics"] == r["metrics"]
        assert (report / "pairs").is_dir() and r["report"] and (tmp / r["report"] / "report.html").is_file()
    lines = (report / "results.jsonl").read_text().splitlines()
    assert len(lines) == 4
    with open(report / "results.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 4 and {"model", "fingerprint", "dataset", "acc1", "seconds", "n"} <= set(table[0])
    assert {(r["backend"], r["precision"]) for r in table} == {("torch", "fp32")}  # what computed every number
    assert "Computed with torch, fp32" in (report / "leaderboard.html").read_text()
    assert (report / "heatmap.png").read_bytes()[:4] == b"\x89PNG"

    class Cells(HTMLParser):
        def __init__(self):
            super().__init__()
            self.tds = []

        def handle_data(self, data):
            if data.strip().endswith("%"):
                self.tds.append(data.strip())

    page = Cells()
    page.feed((report / "leaderboard.html").read_text())
    assert len(page.tds) >= 4 + 2  # every pair and each model's mean


def test_a_failing_pair_does_not_stop_the_grid_and_a_rerun_fills_in_only_what_is_missing(grid_world):
    tmp, datasets, models = grid_world
    report = tmp / "grid"
    missing = str(tmp / "nonesuch")
    first = _eval(*datasets, missing, "-m", models[0], "-m", "NoSuchArch-99:openai", "--report", report, "-f", "json")
    assert first.exit_code == 1
    assert first.stderr.count("error:") == 1 and "pairs failed" in first.stderr
    rows = json.loads(first.stdout)
    assert len(rows) == 6
    assert [r["error"] is None for r in rows] == [True, True, False, False, False, False]
    # the rerun keeps the two finished pairs and tries the failed ones again
    (tmp / "nonesuch").mkdir()
    _folder(tmp / "nonesuch", {"white": (250, 250, 250), "black": (0, 0, 0)})
    second = _eval(*datasets, missing, "-m", models[0], "--report", report, "-f", "json")
    assert second.exit_code == 0, second.output
    assert "2 from an earlier run" in second.stderr
    rows = json.loads(second.stdout)
    assert [bool(r.get("resumed")) for r in rows] == [True, True, False]
    assert len((report / "results.jsonl").read_text().splitlines()) == 6 + 1


def test_other_options_are_not_resumed_from_rows_made_with_different_ones(grid_world):
    tmp, datasets, models = grid_world
    report = tmp / "grid"
    assert _eval(*datasets, "-m", models[0], "--report", report).exit_code == 0
    again = _eval(*datasets, "-m", models[0], "--report", report, "--limit", "2", "-f", "json")
    assert again.exit_code == 0
    assert not any(r.get("resumed") for r in json.loads(again.stdout))


def test_models_and_datasets_files(grid_world):
    tmp, datasets, models = grid_world
    (tmp / "models.txt").write_text(f"# the grid\n{models[0]}\n\n{models[1]}  # tiny\n")
    (tmp / "datasets.txt").write_text("\ufeff" + "\n".join(datasets) + "\n")
    result = _eval("--models", tmp / "models.txt", "--datasets", tmp / "datasets.txt", "-f", "json")
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)) == 4
    (tmp / "empty.txt").write_text("# nothing\n")
    bad = _eval("--models", tmp / "empty.txt", "--datasets", tmp / "datasets.txt")
    assert bad.exit_code == 2 and "no models listed" in bad.stderr


def test_a_rerun_from_another_folder_or_with_another_precision_scores_again(grid_world, monkeypatch):
    tmp, datasets, models = grid_world
    report = tmp / "grid"
    (tmp / "a").mkdir()
    (tmp / "b").mkdir()
    _folder(tmp / "a" / "data", {"red": (230, 20, 20), "blue": (20, 20, 230)})
    _folder(tmp / "b" / "data", {"green": (20, 230, 20), "black": (5, 5, 5), "white": (250, 250, 250)})
    monkeypatch.chdir(tmp / "a")
    assert _eval("data", datasets[0], "-m", models[0], "--report", report).exit_code == 0
    monkeypatch.chdir(tmp / "b")
    again = _eval("data", datasets[0], "-m", models[0], "--report", report, "-f", "json")
    assert again.exit_code == 0, again.output
    rows = json.loads(again.stdout)
    assert [bool(r.get("resumed")) for r in rows] == [False, True]  # b/data is not a/data
    assert rows[0]["n"] == 9
    other = _eval("data", datasets[0], "-m", models[0], "--report", report, "-f", "json", "--precision", "bf16")
    assert other.exit_code == 0, other.output
    assert not any(r.get("resumed") for r in json.loads(other.stdout))


def test_the_grid_runs_on_the_backend_asked_for_and_keeps_backends_apart(grid_world):
    pytest.importorskip("onnxruntime")
    tmp, datasets, models = grid_world
    report = tmp / "grid"
    assert _eval(*datasets, "-m", models[0], "--report", report).exit_code == 0
    onnx = _eval(*datasets, "-m", models[0], "--report", report, "--backend", "onnx", "-f", "json")
    assert onnx.exit_code == 0, onnx.output
    rows = json.loads(onnx.stdout)
    assert not any(r.get("resumed") for r in rows)
    assert all(r["options"]["backend"] == "onnx" for r in rows)
    assert list((Path(os.environ["ZSCLIP_CACHE_DIR"]) / "onnx").rglob("*.onnx"))  # the towers really ran in ORT


def _rewrite_keeping_times(path: Path, data: bytes) -> None:
    st = path.stat()
    path.write_bytes(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.mark.parametrize("kind", ["folder", "csv", "wds"])
def test_a_grid_pair_whose_data_set_files_changed_is_scored_again(grid_world, kind):
    """Issue 21 item 6: the key was the top folder's path and mtime, so images changed inside class folders (or
    a shard, or a CSV's images) were resumed with the old metrics."""
    from .wds_data import encode, shapes_images, write_classification

    tmp, datasets, models = grid_world
    if kind == "folder":
        name, data = datasets[0], Path(datasets[0])
        victim = data / "red" / "0.png"
    elif kind == "csv":
        data = Path(datasets[0])
        lines = ["path,label", *(f"{p.relative_to(data)},{p.parent.name}" for p in sorted(data.rglob("*.png")))]
        (data / "labels.csv").write_text("\n".join(lines) + "\n")
        name, victim = f"csv:{data / 'labels.csv'}", data / "red" / "0.png"
    else:
        classes = [("red", "circle"), ("blue", "square")]
        labelled = [(encode(im, "png"), "png", label) for im, label in shapes_images(classes, 4, size=32)]
        data = write_classification(tmp / "wds", labelled, ["red circle", "blue square"], per_shard=4)
        name, victim = f"wds:{data}", data / "test" / "0.tar"
    report = tmp / "grid"
    first = _eval(name, datasets[1], "-m", models[0], "--report", report, "-f", "json")
    assert first.exit_code == 0, first.output
    same = json.loads(_eval(name, datasets[1], "-m", models[0], "--report", report, "-f", "json").stdout)
    assert all(r.get("resumed") for r in same)  # nothing changed: nothing scored again
    top = victim.parent.parent.stat().st_mtime_ns
    if kind == "wds":
        data_bytes = victim.read_bytes()
        _rewrite_keeping_times(victim, data_bytes[: len(data_bytes) // 2] + b"\0" * (len(data_bytes) // 2 + 1))
    else:
        buf = __import__("io").BytesIO()
        Image.new("RGB", (32, 32), (20, 20, 230)).save(buf, "PNG")
        _rewrite_keeping_times(victim, buf.getvalue())
    assert victim.parent.parent.stat().st_mtime_ns == top
    again = json.loads(_eval(name, datasets[1], "-m", models[0], "--report", report, "-f", "json").stdout)
    assert [bool(r.get("resumed")) for r in again] == [False, True]


def test_a_grid_with_a_retrieval_set_shows_its_recall_and_means_the_sets_that_have_the_metric(grid_world):
    """Issue 21 item 11: the mean was empty for every model ('empty when a pair failed', though none failed) and
    the retrieval set's recall was shown as '-'."""
    import re

    from .wds_data import encode, shapes_images, write_retrieval

    tmp, datasets, models = grid_world
    classes = [("red", "circle"), ("blue", "square")]
    captioned = [(encode(im, "png"), "png", [f"a {' '.join(classes[lab])}"]) for im, lab in shapes_images(classes, 3)]
    coco = write_retrieval(tmp / "coco", captioned)
    report = tmp / "grid"
    args = [*datasets, f"wds:{coco}", "-m", models[0], "-m", models[1], "--report", report, "-t", "photo"]
    result = runner.invoke(app, ["eval", *map(str, args), "--workers", "0"], env={"COLUMNS": "500"})
    assert result.exit_code == 0, result.output
    assert "failed" not in result.stdout and " - " not in result.stdout
    assert f"wds:{coco} (R@5 text→image)" in result.stdout
    assert "mean acc1 (2 of 3 sets:" in result.stdout
    rows = json.loads(_eval(*datasets, f"wds:{coco}", "-m", models[0], "-m", models[1], "--report", report,
                            "-f", "json").stdout)  # fmt: skip
    page = (report / "leaderboard.html").read_text()
    assert "empty when a pair failed" not in page and "show their own metric and are not averaged" in page
    for model in models:
        accs = [r["metrics"]["acc1"] for r in rows if r["model"] == model and r["task"] == "classification"]
        recall = next(r["metrics"]["image_retrieval_recall@5"] for r in rows if r["model"] == model
                      and r["task"] == "retrieval")  # fmt: skip
        row = re.search(rf"<th>{re.escape(model)}</th>(.*?)</tr>", page).group(1)
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row)
        assert cells[-2] == f"{recall:.2%}"
        assert cells[-1] == f"<b>{sum(accs) / 2:.2%}</b>"


def test_a_second_grid_into_the_same_report_at_once_is_refused(grid_world):
    from zsclip.core.locks import Lock
    from zsclip.evaluate.grid import LOCK

    tmp, datasets, models = grid_world
    report = tmp / "grid"
    report.mkdir()
    with Lock(report / LOCK, "grid"):
        result = _eval(datasets[0], datasets[1], "-m", models[0], "--report", report)
    assert result.exit_code == 2 and "is in use by another zsclip process" in result.stderr
    assert not (report / "results.jsonl").exists()
