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


# -- the real CLI in a process of its own, with its own local cluster (issue 21 items 9 and 14) ---------------
INJECT = {
    "kill-a-decode-task": """
import os, signal
from zsclip.engines import ray as ray_engine
real = ray_engine.Decode.__call__
def dying(self, batch):
    try:
        os.close(os.open(os.environ["ZSCLIP_TEST_MARKER"], os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return real(self, batch)
    os.kill(os.getpid(), signal.SIGKILL)
ray_engine.Decode.__call__ = dying
""",
    "actor-cannot-start": """
from zsclip.engines import ray as ray_engine
from zsclip.core.errors import ZsclipError
def broken(self, *args, **kwargs):
    raise ZsclipError("injected: the model actor cannot load its weights")
ray_engine.Embedder.__init__ = broken
""",
}


def _cli(args, cwd, tmp_path, inject=None, timeout=300):
    import os
    import subprocess

    env = {**os.environ, "ZSCLIP_TEST_MARKER": str(tmp_path / "killed"), "RAY_ADDRESS": ""}
    env.pop("RAY_ADDRESS")
    if inject:
        site = tmp_path / "site"
        site.mkdir(exist_ok=True)
        (site / "sitecustomize.py").write_text(INJECT[inject])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), env.get("PYTHONPATH")) if p)
    launcher = tmp_path / "bin" / "zsclip"  # as the installed console script: its folder, not the cwd, on sys.path
    launcher.parent.mkdir(exist_ok=True)
    launcher.write_text("from zsclip.cli import main\nmain()\n")
    command = [sys.executable, str(launcher), *map(str, args)]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_ray_from_a_folder_holding_a_zsclip_folder(tiny_model_dir, folder, tmp_path):
    """Item 14: workers imported the clone's folder as an empty namespace package; 180 lines of tracebacks."""
    (tmp_path / "zsclip").mkdir()  # what the parent of a clone named zsclip holds
    result = _cli(["classify", folder, "-c", CLASSES, "-m", "shapes", "-t", "photo", "-f", "csv", "--engine", "ray",
                   "--no-store"], tmp_path, tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    import csv
    import io

    assert len(list(csv.DictReader(io.StringIO(result.stdout)))) == 9


@pytest.mark.slow
def test_ray_writes_nothing_but_records_to_stdout_even_when_a_worker_dies(tiny_model_dir, folder, tmp_path):
    """Item 9: after a worker died, (raylet) lines landed between the CSV records; the normal run printed a dozen
    lines of Ray logs."""
    import csv
    import io

    result = _cli(["classify", folder, "-c", CLASSES, "-m", tiny_model_dir, "-t", "photo", "-f", "csv", "--engine",
                   "ray", "--no-store", "--batch-size", "2"], tmp_path, tmp_path, "kill-a-decode-task")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "killed").exists()  # a decode task really died
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 9 and all(r["path"].endswith(".png") for r in rows)
    lines = result.stderr.splitlines()
    ray_lines = [line for line in lines if line.startswith("ray: ") and "starting a local cluster" not in line]
    assert len(ray_lines) <= 3, result.stderr
    said = ("ray: ", "skipped ", "classified ", "note: --backend auto")  # the default backend's one note
    assert not [line for line in lines if not line.startswith(said)], result.stderr


@pytest.mark.slow
def test_an_actor_that_cannot_start_is_one_error_line(tiny_model_dir, folder, tmp_path):
    """Item 9: a failed actor start put a 70-line traceback on stdout."""
    result = _cli(["classify", folder, "-c", CLASSES, "-m", tiny_model_dir, "-t", "photo", "-f", "csv", "--engine",
                   "ray", "--no-store"], tmp_path, tmp_path, "actor-cannot-start")  # fmt: skip
    assert result.returncode == 1
    assert result.stdout.strip() in ("", "path,label,prob,abstained,label_1,prob_1,label_2,prob_2,label_3,prob_3")
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "injected: the model actor cannot load its weights" in errors[0]
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) <= 6, result.stderr
