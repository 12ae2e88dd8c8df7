"""Every bench/ script runs, at tiny sizes, so none of them rots when the code under it changes (issue 21:
bench/search.py broke when the store's key did and nothing noticed). These check that a script finishes and
prints its result line, not its numbers: the numbers come from full runs on a quiet machine (bench/README.md)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import SHARED_DATA

REPO = Path(__file__).resolve().parents[1]
IMAGENET = SHARED_DATA / "imagenet-samples"

# script -> (arguments at tiny size, a fragment of the last lines it prints, what it needs)
SCRIPTS = {
    "make_model.py": (["tiny-vit", "{tmp}/tiny"], "tiny", ()),
    "text_classifier.py": (["--arch", "tiny-vit", "--classes", "2", "--cached-classes", "3"], "cached rebuild", ()),
    "gallery_scale.py": (["--n", "20", "--labels", "3", "--out", "{tmp}/gallery"], "| 20 |", ()),
    "load_model.py": (["--repeat", "1"], "load_model", ()),
    "memory_flat.py": (["--images", "60"], "growth", ()),
    "fewshot.py": (
        ["--per-class", "4", "--seeds", "1", "--sets", "mnist-test", "--methods", "prototype", "--no-reference"],
        "end: load average",
        ("imagenet",),
    ),
    "tip_adapter_f.py": (
        ["--per-class", "6", "--seeds", "1", "--sets", "mnist-test", "--shots", "4"],
        "end: load average",
        ("imagenet",),
    ),
    "serve.py": (["--images", "300", "--queries", "5"], "targets", ("starlette",)),
    "search.py": (["--sizes", "2000", "--queries", "3"], "| 2,000 |", ()),
    "dupes.py": (["--originals", "6", "--scale", "500", "--thresholds", "10"], "target <= 60 s", ()),
    "locate_found.py": (["--videos", "1", "--work", "{tmp}/videos"], "zsclip's rule", ("av",)),
    "locate.py": (
        ["--minutes", "0.05", "--no-reference", "--model", "shapes", "--work", "{tmp}/v"],
        "reader alone",
        ("av",),
    ),
    "classify_vs_open_clip.py": (
        ["--arch", "tiny-vit", "--images", "8", "--workers", "0"],
        "top-1 agreement",
        ("imagenet",),
    ),
    "decode_workers.py": (["--images", "16", "--batch-size", "4"], "ratio", ("imagenet",)),
    "draft_agreement.py": (["--arch", "tiny-vit", "--images", "8"], "top-1 agreement", ("imagenet",)),
    "reclassify.py": (["--arch", "tiny-vit", "--images", "8"], "agreement", ("imagenet",)),
    "startup.py": (["--images", "8", "--repeat", "1"], "end-to-end", ("imagenet",)),
    "ray_local.py": (["--n", "8", "--model", "shapes", "--cpus", "2"], "labels the same", ("imagenet", "ray")),
    "default_path.py": (
        ["--arch", "shapes", "--images", "2", "--workdir", "{tmp}/default-path"],
        "one new image",
        ("imagenet",),
    ),
    "cpu_speed.py": (
        [
            "--arch",
            "tiny-vit",
            "--per-set",
            "8",
            "--cosine-images",
            "4",
            "--e2e-images",
            "4",
            "--stored",
            "4",
            "--pipeline-images",
            "8",
            "--workdir",
            "{tmp}/cs",
        ],
        "end: load average",
        ("imagenet", "onnxruntime"),
    ),
    "int8_methods.py": (["--per-set", "8", "--models", "shapes"], "end: load average", ("imagenet", "onnxruntime")),
    "cpu_vs_clip_benchmark.py": (["--arch", "tiny-vit"], "", ("imagenet", "clip_benchmark")),
    "grid.py": (
        ["--cifar10-per-class", "1", "--cifar100-per-class", "1", "--shapes-per-class", "1"],
        "",
        ("clip_benchmark", "webdataset"),
    ),
    "gpu_end_to_end.py": (["--images", "64", "--batch-size", "32"], "", ("cuda",)),
}


def test_every_bench_script_is_in_the_smoke_test():
    assert sorted(SCRIPTS) == sorted(p.name for p in (REPO / "bench").glob("*.py"))


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_bench_script_runs_at_a_tiny_size(script, tmp_path):
    args, fragment, needs = SCRIPTS[script]
    for need in needs:
        if need == "imagenet" and not IMAGENET.is_dir():
            pytest.skip(f"{IMAGENET} is missing (see the README on ../shared/data)")
        if need == "cuda":
            import torch

            if not torch.cuda.is_available():
                pytest.skip("needs a CUDA GPU (bench/gpu_end_to_end.py runs on the lent GPU machine)")
        elif need != "imagenet":
            pytest.importorskip(need)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, str(REPO / "bench" / script), *(a.replace("{tmp}", str(tmp_path)) for a in args)]
    if "imagenet" in needs and '"--data"' in (REPO / "bench" / script).read_text():  # SHARED_DATA may be moved
        command += ["--data", str(IMAGENET)]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert fragment in result.stdout + result.stderr
