"""A sweep over commands x odd inputs: each case ends with the exit code and the one-line error it should (a
usage error 2, a failed run 1, success 0), never a traceback. This is what found the defects of issue 12 (and
a resumed --output that trusted a finished file of another run, issue 21); new odd inputs go here, with what
they should give in `expected`."""

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
    ["-o", "out2-{path}.csv", "--resume"],  # a file of its own per PATH: a fresh run that --resume finds nothing of
    ["--top-k", "0"],
    ["--threshold", "2"],
    ["--batch-size", "0"],
    ["--strict"],
]


def _check(result, expected: tuple[int, str]) -> None:
    code, message = expected
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"traceback: {result.exception!r}\n{result.output}")
    assert "Traceback" not in result.output
    assert result.exit_code == code, (result.exit_code, result.stderr)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    if code:
        assert len(errors) == 1 and message in errors[0], result.stderr
    else:
        assert not errors, result.stderr


# What each case must give: (exit code, a fragment of its one error line). Checks of options come before the
# paths are looked at, and both before a model loads.
OPTION_ERRORS = {
    ("-o", "outdir"): "--output outdir: is a folder",
    ("-f", "jsonl", "-o", "x.csv"): "--format jsonl but --output x.csv is named as csv",
    ("-f", "xml"): "--format xml: use one of table, csv, json, jsonl",
    ("--resume",): "--resume needs --output FILE, --sort-into DIR or --report DIR",
    ("--top-k", "0"): "--top-k 0: must be at least 1",
    ("--threshold", "2"): "--threshold 2.0: must be a probability between 0 and 1",
    ("--batch-size", "0"): "--batch-size 0: must be at least 1",
}
PATH_ERRORS = {
    "empty": (2, "no images found under empty"),
    "missing": (2, "missing: no such file or directory"),
    "@missing.txt": (2, "@missing.txt: cannot read (No such file or directory)"),
    "notes.txt": (1, "no image could be read: its one file was skipped"),
}
CLASS_ERRORS = {
    ("--classes", ""): "--classes: empty class name at position 1",
    ("--classes", "a,a"): "--classes: duplicate class names: 'a'",
    ("--classes", "solo"): "needs at least 2 class names, got 1",
    ("--classes", "Red,red"): "the names differ only in letter case",
    ("--classes-file", "latin1.txt"): "line 2: not UTF-8 text (byte 0xe9 at column 3)",
    ("--classes-file", "missing.txt"): "--classes-file missing.txt: no such file",
    ("--classes", "red,blue", "--classes-file", "bom.txt"): "give --classes or --classes-file, not both",
}


def expected_classify(path: str, options: list[str]) -> tuple[int, str]:
    if tuple(options) in OPTION_ERRORS:
        return 2, OPTION_ERRORS[tuple(options)]
    if path in PATH_ERRORS:
        if path == "notes.txt" and options == ["--strict"]:
            return 1, "notes.txt: not a recognised image format (--strict stops at the first bad file)"
        return PATH_ERRORS[path]
    if options == ["--strict"] and path in ("imgs", "@list.txt"):
        return 1, "broken.png: not a recognised image format (--strict stops at the first bad file)"
    return 0, ""


# The model loads only for inputs that pass every check; those are few, so the sweep stays fast.
def _own(options: list[str], path: str) -> list[str]:
    return [o.replace("{path}", path.replace("/", "_").replace("@", "")) for o in options]


CASES = [
    *(
        (["classify", p, *CLASSES[0], *_own(o, p)], expected_classify(p, o))
        for p, o in itertools.product(PATHS, OUTPUTS)
    ),
    *(
        (["classify", "imgs", *c], (2, CLASS_ERRORS[tuple(c)]) if tuple(c) in CLASS_ERRORS else (0, ""))
        for c in CLASSES
    ),
]


@pytest.mark.parametrize(("args", "expected"), CASES, ids=[" ".join(a) for a, _ in CASES])
def test_classify_sweep(args, expected, world, tiny_model_dir, monkeypatch):
    monkeypatch.chdir(world)
    _check(runner.invoke(app, [*args, "-m", str(tiny_model_dir), "-t", "photo", "--workers", "0"]), expected)


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


EVAL_ERRORS = {
    "empty": (2, "empty: no class folders"),
    "missing": (2, "unknown data set 'missing'"),
    "csv:notes.txt": (2, "csv:notes.txt: needs the columns path,label"),
    "csv:missing.csv": (2, "csv:missing.csv: no such file"),
    "cifar10": (1, "cifar10: cannot download"),  # offline: a named set that is not there is a failed run
    "notes.txt": (2, "unknown data set 'notes.txt'"),
}


def expected_eval(data: str, options: list[str]) -> tuple[int, str]:
    first = {
        ("--report", "notes.txt"): "--report notes.txt: is a file, not a folder",
        ("--limit", "0"): "--limit 0: must be at least 1",
        ("-f", "xml"): "--format xml: use one of table, json",
    }
    if tuple(options) in first:
        return 2, first[tuple(options)]
    if data in EVAL_ERRORS:
        return EVAL_ERRORS[data]
    if options == ["--classnames", "latin1.txt"]:
        return 2, "--classnames latin1.txt, line 2: not UTF-8 text"
    if options == ["--templates", "nonesuch"]:
        return 2, "unknown template set 'nonesuch'"
    return 0, ""


OTHER_CASES = [
    *((["eval", d, *o], expected_eval(d, o)) for d, o in itertools.product(DATA, EVAL_OPTIONS)),
    *(
        (
            ["prompts", "compare", d, "--sets", s],
            (2, "unknown template set 'x'")
            if s == "x"
            else (2, "unknown data set 'missing'")
            if d == "missing"
            else (0, ""),
        )
        for d, s in itertools.product(["imgs", "missing"], ["photo,none", "default,photo", "x"])
    ),
    (["prompts", "show", "default"], (0, "")),
    (["prompts", "show", "photo"], (0, "")),
    (["prompts", "show", "missing"], (2, "unknown template set 'missing'")),
    (["prompts", "show", "notes.txt"], (2, "template set notes.txt, line 1: 'hello' has no {} for the class name")),
    (["prompts", "show", "bom.txt"], (2, "template set bom.txt, line 1: 'red' has no {} for the class name")),
    (["data", "shapes", "notes.txt", "--n", "2", "--eval-per-class", "0"], (2, "notes.txt: is a file, not a folder")),
    (["data", "shapes", "nodir/a/b", "--n", "2", "--eval-per-class", "0"], (0, "")),
    (["data", "shapes", "fresh", "--n", "2", "--eval-per-class", "0"], (0, "")),
    (["train", "notes.txt", "--config", "tiny-vit", "-o", "m"], (2, "missing column(s) caption, filepath")),
    (["train", "imgs", "--config", "nonesuch", "-o", "m"], (2, "--config nonesuch: no such file or model config")),
    (["train", "--resume", "missing"], (2, "--resume missing: no checkpoint.pt there to resume from")),
    (["train", "--resume", "imgs"], (2, "--resume imgs: no checkpoint.pt there to resume from")),
    (["cache", "clear", "-m", "NotAnArch:notes.txt"], (2, "unknown architecture 'NotAnArch'")),
    (["cache", "info"], (0, "")),
]


@pytest.mark.parametrize(("args", "expected"), OTHER_CASES, ids=[" ".join(a) for a, _ in OTHER_CASES])
def test_other_commands_sweep(args, expected, world, tiny_model_dir, monkeypatch):
    monkeypatch.chdir(world)
    extra = (
        ["-m", str(tiny_model_dir), "--workers", "0"]
        if args[0] in ("eval",) or args[:2] == ["prompts", "compare"]
        else []
    )
    _check(runner.invoke(app, [*args, *extra]), expected)
