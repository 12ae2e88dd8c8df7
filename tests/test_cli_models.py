"""CLI-level checks of model loading (issue 13.2): a rerun whose prompts and images are all cached neither builds
the model nor imports open_clip, through the real command line. They need no new option; they guard the CLI
package against importing open_clip (or building the model) on that path."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .conftest import REPO

# Runs the CLI as `python -m zsclip` does, then reports whether open_clip was imported.
_WRAPPER = """
import atexit, runpy, sys
atexit.register(lambda: sys.stderr.write("\\nopen_clip imported: %s\\n" % ("open_clip" in sys.modules)))
sys.argv = ["zsclip", *sys.argv[1:]]
runpy.run_module("zsclip", run_name="__main__", alter_sys=True)
"""


def _zsclip(cache, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "ZSCLIP_CACHE_DIR": str(cache)}
    return subprocess.run(
        [sys.executable, "-c", _WRAPPER, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow  # five processes
def test_a_cached_classify_rerun_does_not_import_open_clip(tmp_path):
    args = ["classify", "examples/shapes", "-c", "red star,blue cross", "-m", "shapes", "-f", "jsonl"]
    first = _zsclip(tmp_path, *args)
    assert first.returncode == 0, first.stderr
    assert "open_clip imported: True" in first.stderr
    again = _zsclip(tmp_path, *args)
    assert again.returncode == 0, again.stderr
    assert "open_clip imported: False" in again.stderr
    assert again.stdout == first.stdout
    for change in (["--top-k", "1"], ["--threshold", "0.9", "-f", "csv"]):  # still all cached
        other = _zsclip(tmp_path, *args, *change)
        assert other.returncode == 0 and "open_clip imported: False" in other.stderr, other.stderr


@pytest.mark.slow
def test_new_classes_with_cached_prompts_do_not_import_open_clip(tmp_path):
    base = ["classify", "examples/shapes", "-m", "shapes", "-f", "jsonl"]
    assert _zsclip(tmp_path, *base, "-c", "red star,blue cross,green circle").returncode == 0
    subset = _zsclip(tmp_path, *base, "-c", "green circle,red star")  # every prompt cached by the first run
    assert subset.returncode == 0 and "open_clip imported: False" in subset.stderr, subset.stderr
