"""Every command and Python example in README.md and docs/*.md runs, so a doc that lies fails.

Each page's commands run in order in a sandbox that is the user's `~` and working directory, through the real
CLI, on what a user's machine would have offline: the shipped model for any pretrained tag (the default model
too, through ZSCLIP_MODEL), a small random-init model for a second tag, the named data sets already in the cache
as their download would leave them (tiny copies), shapes-world pictures for photo folders, a rendered video for
`demo.mp4`. A folder a command moves files out of is filled again before the next command. `zsclip serve` runs as
a server that must answer its page; `pip install` and the test command itself are not run here (.ci/run does).
"""

from __future__ import annotations

import os
import pickle
import re
import shlex
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.conftest import served_url, shapes_folders
from zsclip.cli import app

REPO = Path(__file__).resolve().parents[1]
PAGES = ["README.md", *sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md") if p.name != "cli.md")]
COMPOSITIONS = [("red", "circle"), ("blue", "cross"), ("green", "square"), ("orange", "triangle")]
# Folders a page's commands read photos from (created under the sandbox home/working directory).
PHOTO_FOLDERS = ["images", "inbox", "photos", "Pictures", "Photos/inbox", "data/photos"]
LABELLED_FOLDERS = ["labelled", "mnist-test", "my-folder"]


def commands(page: str) -> list[str]:
    """The shell commands of a page: code lines starting with `zsclip` or `$ zsclip` (after `&&` too), joined
    across trailing backslashes."""
    found, pending = [], ""
    in_fence = False
    for line in (REPO / page).read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_fence = not in_fence
            continue
        code = in_fence or line.startswith("    ")
        text = pending + line.strip() if pending else line.strip()
        if not code and not pending:
            continue
        if text.endswith("\\"):
            pending = text[:-1] + " "
            continue
        pending = ""
        text = text.removeprefix("$ ")
        for part in text.split("&&"):
            if part.strip().startswith("zsclip "):
                found.append(part.strip())
    return found


def python_blocks(page: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (REPO / page).read_text(encoding="utf-8"), re.S)


# -- the sandbox --------------------------------------------------------------------------------------------
def cifar_download(cache: Path, key: str, n: int = 20) -> None:
    """What the CIFAR download leaves in the cache (torchvision's pickle), with n images."""
    rng = np.random.default_rng(0)
    data = rng.integers(0, 255, (n, 3 * 32 * 32), dtype=np.uint8)
    if key == "cifar10":
        folder, name, batch = "cifar-10-batches-py", "test_batch", {"data": data, "labels": list(range(n))[:n]}
        batch["labels"] = [i % 10 for i in range(n)]
    else:
        folder, name, batch = "cifar-100-python", "test", {"data": data, "fine_labels": [i % 100 for i in range(n)]}
    target = cache / "datasets" / key / folder
    target.mkdir(parents=True)
    with open(target / name, "wb") as f:
        pickle.dump(batch, f)


def imagenet_v2_download(cache: Path, inputs: Path) -> None:
    """What the ImageNetV2 download leaves in the cache: a folder per class index, here 3 of them with pictures."""
    target = cache / "datasets" / "imagenet-v2-matched-frequency" / "imagenetv2-matched-frequency-format-val"
    for label in range(1000):
        (target / str(label)).mkdir(parents=True)
    for label, picture in zip((0, 1, 999), sorted((inputs / "photos").glob("*.png")), strict=False):
        shutil.copy(picture, target / str(label) / f"{picture.stem}.jpeg")


def wds_download(cache: Path, name: str) -> None:
    """What a wds/NAME download leaves in the cache: CLIP_benchmark's layout."""
    from .wds_data import encode, shapes_images, write_classification

    images = [(encode(image, "png"), "png", label) for image, label in shapes_images(COMPOSITIONS, 3, seed=1)]
    write_classification(cache / "datasets" / "wds" / name, images, [f"{c} {s}" for c, s in COMPOSITIONS])


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """What every sandbox starts from."""
    from zsclip.datasets.shapes import write_dataset

    root = tmp_path_factory.mktemp("inputs")
    photos = root / "photos"
    shutil.copytree(REPO / "examples" / "shapes", photos)
    shapes_folders(root / "labelled", COMPOSITIONS, per_class=6)
    write_dataset(root / "captions", n=40, seed=3, size=64, eval_per_class=1)
    from .videos import shapes_video

    shapes_video(root / "demo.mp4", [(1, 3, "red", "circle"), (4, 6, "blue", "square")], seconds=7.0)
    return root


@pytest.fixture
def sandbox(inputs, tmp_path, private_cache, tiny_model_dir, monkeypatch) -> Path:
    home = tmp_path / "home"  # `~` in the commands (HOME itself stays: Ray keeps its auth token under it)
    home.mkdir()
    monkeypatch.setenv("ZSCLIP_MODEL", "shapes")  # the default model, ViT-B-32:openai, needs a download
    monkeypatch.chdir(home)
    for key in ("cifar10", "cifar100"):
        cifar_download(private_cache, key)
    for name in ("cifar10", "vtab-flowers"):
        wds_download(private_cache, name)
    imagenet_v2_download(private_cache, inputs)
    shutil.copytree(REPO / "examples", home / "examples")  # README's quickstart paths, relative to a checkout
    shutil.copytree(REPO / "prompts", home / "prompts")
    shutil.copy(inputs / "demo.mp4", home / "demo.mp4")
    shutil.copy(inputs / "photos" / "red_star.png", home / "query.jpg")
    (home / "classes.txt").write_text("red circle\nblue cross\ngreen square\n")
    shutil.copytree(inputs / "captions", home / "data" / "shapes")
    from .wds_data import encode, shapes_images, write_classification

    images = [(encode(image, "png"), "png", label) for image, label in shapes_images(COMPOSITIONS, 3, seed=2)]
    write_classification(home / "data" / "wds_cifar10", images, [f"{c} {s}" for c, s in COMPOSITIONS])
    restore(inputs, home)
    return home


def restore(inputs: Path, home: Path) -> None:
    """Fill the photo folders again (a --mode move empties them)."""
    for name in PHOTO_FOLDERS:
        shutil.copytree(inputs / "photos", home / name, dirs_exist_ok=True)
    for name in LABELLED_FOLDERS:
        shutil.copytree(inputs / "labelled", home / name, dirs_exist_ok=True)


def substitute(argv: list[str], tiny_model_dir: Path, home: Path) -> list[str]:
    """Offline stand-ins: `~` is the sandbox (a shell expands it, zsclip expands it in `wds:~/...`), the shipped
    model stands for pretrained tags, a tiny model for a second one, local paths for remote ones, and a smaller size
    for a command that would run for minutes."""
    models = {"ViT-B-32:openai": "shapes", "ViT-B-16:openai": str(tiny_model_dir)}
    paths = {"s3://bucket/photos": "photos", "/data/photos": "data/photos", "/tmp/shapes50k": "shapes-data",
             "/tmp/shapes-run1": "shapes-run1"}  # fmt: skip
    smaller = {"--n": "300", "--epochs": "1"}
    out = []
    for i, arg in enumerate(argv):
        previous = argv[i - 1] if i else ""
        arg = smaller.get(previous, models.get(arg, paths.get(arg, arg)))
        out.append(re.sub(r"^(wds:)?~/", lambda m: f"{m.group(1) or ''}{home}/", arg))
    return out


def serve(argv: list[str]) -> None:
    """`zsclip serve` runs until stopped: it must come up and answer its page."""
    command = [sys.executable, "-m", "zsclip", *argv, "--port", "0", "--rescan", "0"]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        url = served_url(proc)
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())  # keeps the login cookie
        with browser.open(url, timeout=30) as page:
            assert page.status == 200 and b"<html" in page.read().lower()
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.mark.parametrize("page", PAGES)
def test_every_command_of_the_page_runs(page, sandbox, inputs, tiny_model_dir):
    found = commands(page)
    if page == "README.md":
        assert len(found) >= 10  # the parser still finds the tour
    for line in found:
        argv = substitute(shlex.split(line, comments=True)[1:], tiny_model_dir, sandbox)
        restore(inputs, sandbox)
        if argv[0] == "serve":
            serve(argv)
            continue
        result = CliRunner().invoke(app, argv)
        assert result.exit_code == 0, f"{page}: `{line}` -> exit {result.exit_code}: {result.stderr.strip()[-600:]}"
        assert "Traceback" not in result.stderr, line


@pytest.mark.parametrize("page", [p for p in PAGES if python_blocks(p)])
def test_every_python_example_of_the_page_runs(page, sandbox, capsys):
    for block in python_blocks(page):
        code = "import zsclip\n" + block.replace('"ViT-B-32:openai"', '"shapes"')
        exec(compile(code, f"{page} example", "exec"), {"__name__": "__doc_example__"})
    assert capsys.readouterr().out.strip()  # the examples print what they found
