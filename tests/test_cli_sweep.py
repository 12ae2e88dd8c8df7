"""A sweep over commands x odd inputs: whatever the input, zsclip ends with exit 0, 1 or 2, never a traceback,
and an error is one line on stderr. This is what found the defects of issue 12; new odd inputs go here."""

from __future__ import annotations

import contextlib
import itertools
import os

import pytest
from PIL import Image
from typer.testing import CliRunner

from zsclip.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    imgs = root / "imgs"
    (imgs / "red").mkdir(parents=True)
    (imgs / "blue").mkdir()
    Image.new("RGB", (24, 24), (220, 10, 10)).save(imgs / "red" / "a.png")
    Image.new("RGB", (24, 24), (10, 10, 220)).save(imgs / "blue" / "b.jpg")
    (imgs / "blue" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    odd = root / "odd"
    odd.mkdir()
    Image.new("RGB", (24, 24), (10, 220, 10)).save(odd / "spaces and ünï 写真.png")
    with contextlib.suppress(OSError):
        Image.new("RGB", (24, 24), (10, 220, 10)).save(os.fsencode(odd) + b"/latin\xe9.png")
    (root / "empty").mkdir()
    (root / "notes.txt").write_text("hello\n")
    (root / "bom.txt").write_text("\ufeffred\nblue\n", encoding="utf-8")
    (root / "latin1.txt").write_bytes("rouge\nbl\xe9\n".encode("latin-1"))
    (root / "list.txt").write_text(f"\ufeff{imgs / 'red' / 'a.png'}\n{imgs / 'blue'}\n", encoding="utf-8")
    (root / "outdir").mkdir()
    return root


PATHS = ["imgs", "odd", "empty", "missing", "notes.txt", "@list.txt", "@missing.txt", "imgs/red/a.png"]
CLASSES = [
    ["--classes", "red,blue"],
    ["--classes", ""],
    ["--classes", "a,a"],
    ["--classes", "solo"],
    ["--classes", "unknown,red"],
    ["--classes", "Red,red"],
    ["--classes-file", "bom.txt"],
    ["--classes-file", "latin1.txt"],
    ["--classes-file", "missing.txt"],
    ["--classes", "red,blue", "--classes-file", "bom.txt"],
]
OUTPUTS = [
    [],
    ["-o", "out.jsonl"],
    ["-o", "outdir"],
    ["-o", "nodir/out.csv"],
    ["-o", "-"],
    ["-f", "jsonl", "-o", "x.csv"],
    ["-f", "xml"],
    ["-f", "csv", "--failures", "nodir/f.jsonl"],
    ["--resume"],
    ["-o", "out2.csv", "--resume"],
    ["--top-k", "0"],
    ["--threshold", "2"],
    ["--batch-size", "0"],
    ["--strict"],
]


def _check(result) -> None:
    assert result.exit_code in (0, 1, 2), (result.exit_code, result.output)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"traceback: {result.exception!r}\n{result.output}")
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    if result.exit_code:
        assert len(errors) == 1, result.stderr
    else:
        assert not errors, result.stderr


# The model loads only for inputs that pass every check; those are few, so the sweep stays fast.
CASES = [
    *(["classify", p, *CLASSES[0], *o] for p, o in itertools.product(PATHS, OUTPUTS)),
    *(["classify", "imgs", *c] for c in CLASSES),
]


@pytest.mark.parametrize("args", CASES, ids=" ".join)
def test_classify_sweep(args, world, tiny_model_dir, monkeypatch):
    monkeypatch.chdir(world)
    _check(runner.invoke(app, [*args, "-m", str(tiny_model_dir), "-t", "photo", "--workers", "0"]))


DATA = ["imgs", "empty", "missing", "csv:notes.txt", "csv:missing.csv", "cifar10", "notes.txt"]
EVAL_OPTIONS = [
    [],
    ["--report", "notes.txt"],
    ["--report", "nodir/deeper/report"],
    ["--limit", "0"],
    ["-f", "xml"],
    ["--classnames", "bom.txt"],
    ["--classnames", "latin1.txt"],
    ["--templates", "nonesuch"],
]


@pytest.mark.parametrize(
    "args",
    [
        *(["eval", d, *o] for d, o in itertools.product(DATA, EVAL_OPTIONS)),
        *(
            ["prompts", "compare", d, "--sets", s]
            for d, s in itertools.product(["imgs", "missing"], ["photo,none", "default,photo", "x"])
        ),
        *(["prompts", "show", n] for n in ["default", "photo", "missing", "notes.txt", "bom.txt"]),
        *(["data", "shapes", p, "--n", "2", "--eval-per-class", "0"] for p in ["notes.txt", "nodir/a/b", "fresh"]),
        *(
            ["train", *a]
            for a in [
                ["notes.txt", "--config", "tiny-vit", "-o", "m"],
                ["imgs", "--config", "nonesuch", "-o", "m"],
                ["--resume", "missing"],
                ["--resume", "imgs"],
            ]
        ),
        ["cache", "clear", "-m", "NotAnArch:notes.txt"],
        ["cache", "info"],
    ],
    ids=" ".join,
)
def test_other_commands_sweep(args, world, tiny_model_dir, monkeypatch):
    monkeypatch.chdir(world)
    extra = (
        ["-m", str(tiny_model_dir), "--workers", "0"]
        if args[0] in ("eval",) or args[:2] == ["prompts", "compare"]
        else []
    )
    _check(runner.invoke(app, [*args, *extra]))
