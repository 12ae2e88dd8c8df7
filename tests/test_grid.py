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
