"""`--backend` on the command line: classify, eval and prompts compare give torch's labels with onnx; names and a
missing extra are one-line errors."""

from __future__ import annotations

import json
import sys

import pytest
from typer.testing import CliRunner

from zsclip.cli import app
from zsclip.datasets.shapes import write_dataset

runner = CliRunner()


def run(*args, env=None):
    return runner.invoke(app, [str(a) for a in args], env=env)


@pytest.fixture(scope="module")
def shapes_eval(tmp_path_factory):
    out = tmp_path_factory.mktemp("shapes")
    write_dataset(out, n=8, seed=5, size=64, eval_per_class=1)
    return out / "eval"


def _labels(result) -> list[tuple[str, str]]:
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    return [(r["path"], r["label"]) for r in rows]


def test_classify_with_onnx_backends_gives_torch_labels(shapes_eval):
    pytest.importorskip("onnxruntime")
    common = ["classify", shapes_eval, "-m", "shapes", "-c", "red circle,blue square,green star", "-f", "jsonl", "-q"]
    torch_labels = _labels(run(*common, "--backend", "torch"))
    assert _labels(run(*common, "--backend", "onnx")) == torch_labels
    assert _labels(run(*common, env={"ZSCLIP_BACKEND": "onnx"})) == torch_labels  # the environment variable
    int8 = _labels(run(*common, "--backend", "onnx-int8", "--no-store"))
    agree = sum(a == b for a, b in zip(int8, torch_labels, strict=True)) / len(torch_labels)
    assert agree >= 0.9  # 36 images: the trained shipped model; the full check is bench/cpu_backends.py


def test_eval_and_prompts_compare_take_the_backend(shapes_eval):
    pytest.importorskip("onnxruntime")
    base = ["--classnames", "shapes", "-m", "shapes", "-q"]
    torch_eval = run("eval", shapes_eval, *base, "-f", "json")
    onnx_eval = run("eval", shapes_eval, *base, "-f", "json", "--backend", "onnx")
    assert onnx_eval.exit_code == 0, onnx_eval.output
    assert json.loads(onnx_eval.stdout)["metrics"] == json.loads(torch_eval.stdout)["metrics"]
    compare = run("prompts", "compare", shapes_eval, *base, "--sets", "shapes", "--backend", "onnx")
    assert compare.exit_code == 0, compare.output


def test_unknown_backend_is_a_usage_error(shapes_eval):
    result = run("classify", shapes_eval, "-m", "shapes", "-c", "a,b", "--backend", "tensorrt")
    assert result.exit_code == 2
    assert "--backend tensorrt: use one of torch, onnx, onnx-int8, auto" in result.output


def test_missing_extra_is_one_line(shapes_eval, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    result = run("classify", shapes_eval, "-m", "shapes", "-c", "a,b", "--backend", "onnx")
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert lines == ["error: --backend onnx needs onnxruntime, which is not installed: pip install 'zsclip[onnx]'"]
    assert "Traceback" not in result.output
