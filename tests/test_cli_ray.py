"""`--engine ray`, the Ray options and `--shard` through the real CLI (classify, eval, prompts compare)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from zsclip.cli import app

runner = CliRunner()
CLASSES = "red,green,blue"


def run(*args, env=None):
    return runner.invoke(app, [str(a) for a in args], env=env)


@pytest.fixture
def folder(tmp_path) -> Path:
    root = tmp_path / "photos"
    (root / "nested").mkdir(parents=True)
    for i in range(9):
        colour = [(200, 20, 20), (20, 200, 20), (20, 20, 200)][i % 3]
        noise = np.random.RandomState(i).randint(0, 40, (36, 36, 3))
        Image.fromarray((np.array(colour) + noise).clip(0, 255).astype("uint8")).save(
            root / ("nested" if i % 2 else "") / f"{i}.png"
        )
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff broken")
    return root


def classify(folder, model, *extra):
    result = run("classify", folder, "-c", CLASSES, "-m", model, "-t", "photo", "-f", "jsonl", "--no-store", *extra)
    return result, [json.loads(line) for line in result.stdout.splitlines()]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--engine", "spark"], "--engine spark: use one of local, ray"),
        (["--actors", "2"], "--actors is an option of --engine ray"),
        (["--ray-address", "auto"], "--ray-address is an option of --engine ray"),
        (["--shard", "4/4"], "--shard 4/4: give i/N with 0 <= i < N"),
    ],
)
def test_option_mistakes_are_one_line_usage_errors(tiny_model_dir, folder, args, message):
    result, _ = classify(folder, tiny_model_dir, *args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_engine_ray_without_ray_names_the_pip_command(tiny_model_dir, folder, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    for command in (["classify", folder, "-c", CLASSES], ["eval", folder], ["prompts", "compare", folder]):
        result = run(*command, "-m", tiny_model_dir, "--engine", "ray")
        assert result.exit_code == 2, result.stderr
        assert 'pip install "zsclip[ray]"' in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_engine_from_the_environment(tiny_model_dir, folder):
    result = run("classify", folder, "-c", CLASSES, "-m", tiny_model_dir, env={"ZSCLIP_ENGINE": "spark"})
    assert result.exit_code == 2 and "--engine spark" in result.stderr


def test_shards_cover_every_file_once(tiny_model_dir, folder):
    _, whole = classify(folder, tiny_model_dir)
    parts = [classify(folder, tiny_model_dir, "--shard", f"{i}/3")[1] for i in range(3)]
    paths = [r["path"] for p in parts for r in p]
    assert sorted(paths) == sorted(r["path"] for r in whole if "label" in r)  # broken.jpg is a skip, on stderr
    assert len(paths) == len(set(paths))


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_classify_engine_ray_writes_the_same_records(ray_cluster, tiny_model_dir, folder, tmp_path):
    _, records = classify(folder, tiny_model_dir, "--workers", "0")
    remote, ray_records = classify(folder, tiny_model_dir, "--engine", "ray", "--actors", "1")
    assert remote.exit_code == 0, remote.stderr
    assert [r["path"] for r in ray_records] == [r["path"] for r in records]  # stdout holds records only
    assert [r["label"] for r in ray_records] == [r["label"] for r in records]
    assert [r["prob"] for r in ray_records] == pytest.approx([r["prob"] for r in records], abs=1e-5)
    assert "skipped" in remote.stderr and "broken.jpg" in remote.stderr
    out = tmp_path / "out.csv"
    written = run("classify", folder, "-c", CLASSES, "-m", tiny_model_dir, "-t", "photo", "--engine", "ray", "-o", out,
                  "--failures", tmp_path / "failures.jsonl")  # fmt: skip
    assert written.exit_code == 0, written.stderr
    assert len(out.read_text().splitlines()) == 1 + len(records)
    assert "broken.jpg" in (tmp_path / "failures.jsonl").read_text()


@pytest.mark.slow
def test_eval_engine_ray_reports_the_same_metrics(ray_cluster, tiny_model_dir, tmp_path):
    data = tmp_path / "data"
    for i, name in enumerate(CLASSES.split(",")):
        (data / name).mkdir(parents=True)
        for j in range(3):
            Image.new("RGB", (32, 32), (80 * i, 40 * j, 120)).save(data / name / f"{j}.png")
    local = run("eval", data, "-m", tiny_model_dir, "-t", "photo", "-f", "json", "--no-store", "--workers", "0")
    remote = run("eval", data, "-m", tiny_model_dir, "-t", "photo", "-f", "json", "--no-store", "--engine", "ray")
    assert remote.exit_code == 0, remote.stderr
    assert json.loads(remote.stdout)["metrics"] == pytest.approx(json.loads(local.stdout)["metrics"])
