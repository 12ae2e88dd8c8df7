"""The CLI package: every command's help renders, start-up imports nothing heavy, groups without a command print
their help without an empty error, and option mistakes are one-line usage errors before any model loads."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import pytest
import typer
from typer.testing import CliRunner

from zsclip.cli import app

runner = CliRunner()
HEAVY = ("torch", "open_clip", "pandas", "sklearn", "matplotlib")


def _commands(group, prefix: tuple[str, ...] = ()):
    ctx = group.context_class(group)
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        yield (*prefix, name)
        if hasattr(cmd, "list_commands"):  # typer may vendor its own click: duck-type the group
            yield from _commands(cmd, (*prefix, name))


ALL_COMMANDS = list(_commands(typer.main.get_command(app)))


def test_the_command_list_is_complete():
    names = {" ".join(c) for c in ALL_COMMANDS}
    assert {"classify", "eval", "train", "models", "prompts compare", "cache info", "data shapes"} <= names


@pytest.mark.parametrize("command", [(), *ALL_COMMANDS], ids=lambda c: " ".join(c) or "zsclip")
def test_every_help_renders(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output and "Traceback" not in result.output


def _imported_after(code: str) -> set[str]:
    probe = f"import sys\n{code}\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_importing_the_cli_and_the_package_loads_no_heavy_library():
    assert _imported_after("import zsclip.cli") == set()
    assert _imported_after("import zsclip; zsclip.__version__; zsclip.UsageError") == set()


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["--version"],
        ["prompts", "list"],
        ["prompts", "show", "photo"],
        ["cache", "path"],
        ["classify", "x.jpg", "--classes", ""],
        ["classify", "x.jpg", "--classes", "a,b", "--format", "xml"],
        ["eval", "cifar10", "--format", "xml"],
        ["models", "--format", "xml"],
    ],
    ids=" ".join,
)
def test_light_commands_and_usage_errors_never_import_torch(args):
    code = (
        f"import sys; sys.argv = ['zsclip', *{args!r}]\n"
        "from zsclip.cli import main\ntry:\n    main()\nexcept SystemExit:\n    pass"
    )
    assert "torch" not in _imported_after(code)


def test_public_api_names_resolve():
    import zsclip

    assert callable(zsclip.classify) and callable(zsclip.evaluate) and callable(zsclip.load_dataset)
    assert callable(zsclip.evaluate.report.write_report)
    import zsclip.classify.predict

    assert callable(zsclip.classify)
    with pytest.raises(AttributeError):
        zsclip.no_such_name  # noqa: B018


@pytest.mark.parametrize("group", [[], ["cache"], ["data"], ["prompts"]], ids=lambda g: " ".join(g) or "zsclip")
def test_a_group_without_command_prints_help_and_no_empty_error(group):
    proc = subprocess.run([sys.executable, "-m", "zsclip", *group], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Usage" in proc.stdout + proc.stderr
    assert "error:" not in proc.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["models", "-f", "xml"], "--format xml"),
        (["train", "--resume", "somewhere", "--epochs", "5"], "drop --epochs"),
        (["train", "data.csv", "--config", "tiny-vit", "-o", "out", "--eval-dir", "missing"], "--eval-dir missing"),
    ],
)
def test_option_mistakes_are_one_line_usage_errors(args, needle, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0]


def test_eval_on_a_subset_warns_nothing_and_quiet_is_quiet(tiny_model_dir, tmp_path):
    from PIL import Image

    root = tmp_path / "data"
    for name, colour in (("red", (220, 20, 20)), ("green", (20, 220, 20)), ("blue", (20, 20, 220))):
        (root / name).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (32, 32), colour).save(root / name / f"{i}.png")
    (root / "red" / "bad.png").write_bytes(b"not an image")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = runner.invoke(
            app, ["eval", str(root), "-m", str(tiny_model_dir), "-t", "photo", "-f", "json", "-q", "--workers", "0"]
        )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["images"] == 6
    assert result.stderr == ""
    assert not [w for w in caught if "y_pred contains classes" in str(w.message)]


def test_an_unknown_architecture_with_an_existing_checkpoint_is_named(tmp_path):
    weights = tmp_path / "file.pt"
    weights.write_bytes(b"x")
    images = tmp_path / "imgs"
    images.mkdir()
    from PIL import Image

    Image.new("RGB", (8, 8)).save(images / "a.png")
    result = runner.invoke(app, ["classify", str(images), "-c", "a,b", "-m", f"ViT-B-3:{weights}"])
    assert result.exit_code == 2
    assert "unknown architecture 'ViT-B-3'" in result.stderr and "ViT-B-32" in result.stderr
    assert "no such directory" not in result.stderr


def test_build_classifier_checks_class_names_as_the_cli_does(tiny_model_dir):
    import zsclip

    model = zsclip.load_model(str(tiny_model_dir))
    clf = zsclip.build_classifier(model, "red star, blue cross", "photo")
    assert clf.classnames == ["red star", "blue cross"]
    for bad, message in (("solo", "at least 2"), ("a,a", "duplicate"), (["a", ""], "empty class name")):
        with pytest.raises(zsclip.UsageError, match=message):
            zsclip.build_classifier(model, bad, "photo")
    assert len(zsclip.build_classifier(model, ["missile", "missile", "tank"], "photo").labels) == 3


def test_names_that_tie_are_one_usage_error_and_captions_may_repeat(tiny_model_dir, tmp_path):
    from PIL import Image

    import zsclip

    images = tmp_path / "imgs"
    images.mkdir()
    Image.new("RGB", (16, 16), (200, 0, 0)).save(images / "a.png")
    tied = runner.invoke(app, ["classify", str(images), "-c", "Red,red,blue", "-m", str(tiny_model_dir), "-t", "photo"])
    assert tied.exit_code == 2, tied.output
    assert tied.exception is None or isinstance(tied.exception, SystemExit)
    # Retrieval captions and video texts are not class lists: repeats, ties and a single text are fine.
    model = zsclip.load_model(str(tiny_model_dir))
    from zsclip.retrieval.search import text_vectors

    assert text_vectors(model, ["a caption", "A CAPTION", "a caption"]).shape[0] == 3
    assert text_vectors(model, ["only one"]).shape[0] == 1


def test_output_locations_of_locate_and_search_are_checked_before_work(tmp_path):
    video = tmp_path / "v.mp4"
    video.write_bytes(b"not really")
    (tmp_path / "dir").mkdir()
    (tmp_path / "file.txt").write_text("x")
    plot = runner.invoke(app, ["locate", str(video), "--text", "red", "--plot", str(tmp_path / "dir")])
    assert plot.exit_code == 2 and "--plot" in plot.stderr and "is a folder" in plot.stderr
    report = runner.invoke(app, ["locate", str(video), "--text", "red", "--report", str(tmp_path / "file.txt")])
    assert report.exit_code == 2 and "--report" in report.stderr
    mismatch = runner.invoke(app, ["search", "red", str(tmp_path), "-o", str(tmp_path / "x.csv"), "-f", "jsonl"])
    assert mismatch.exit_code == 2 and "--format jsonl" in mismatch.stderr


def test_a_dangling_link_named_on_the_command_line_is_skipped_with_its_reason(tiny_model_dir, tmp_path):
    from PIL import Image

    Image.new("RGB", (16, 16), (200, 0, 0)).save(tmp_path / "ok.png")
    (tmp_path / "dangling.png").symlink_to(tmp_path / "gone.png")
    result = runner.invoke(
        app, ["classify", str(tmp_path / "dangling.png"), str(tmp_path / "ok.png"), "-c", "a,b",
              "-m", str(tiny_model_dir), "-t", "photo", "--workers", "0"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "dangling.png: broken symbolic link" in result.stderr and len(result.stdout.splitlines()) == 1


def test_max_pixels_holds_for_images_already_in_the_store(tiny_model_dir, tmp_path):
    from PIL import Image

    Image.new("RGB", (64, 64), (200, 0, 0)).save(tmp_path / "a.png")
    args = [
        "classify",
        str(tmp_path / "a.png"),
        "-c",
        "a,b",
        "-m",
        str(tiny_model_dir),
        "-t",
        "photo",
        "--workers",
        "0",
    ]
    assert runner.invoke(app, args).exit_code == 0  # stores the vector
    limited = runner.invoke(app, [*args, "--max-pixels", "10"])
    assert limited.exit_code == 1 and "over the --max-pixels limit of 10" in limited.stderr


def test_train_never_overwrites_a_trained_model(tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    (out / "open_clip_config.json").write_text("{}")
    (tmp_path / "captions.csv").write_text("filepath,caption\n")
    result = runner.invoke(app, ["train", str(tmp_path / "captions.csv"), "--config", "tiny-vit", "-o", str(out)])
    assert result.exit_code == 2 and "holds a trained model already" in result.stderr
    assert "--resume" not in result.stderr  # no checkpoint there: nothing to resume
    assert (out / "open_clip_config.json").read_text() == "{}"


def test_a_shard_that_holds_no_file_is_a_finished_job(tmp_path):
    from PIL import Image

    Image.new("RGB", (16, 16), (200, 0, 0)).save(tmp_path / "only.png")
    results = [
        runner.invoke(app, ["classify", str(tmp_path / "only.png"), "-c", "a,b", "-m", "shapes", "--shard", f"{i}/2"])
        for i in range(2)
    ]
    assert [r.exit_code for r in results] == [0, 0], [r.output for r in results]
    assert sum(len(r.stdout.splitlines()) for r in results) == 1
    assert any("holds none of these files" in r.stderr for r in results)


def test_the_root_help_lists_each_command_as_its_own_help_says_and_imports_none():
    """`zsclip --help` comes from a table (the commands load only when one runs): each line is the command's own."""
    from zsclip.cli.group import LazyGroup

    group = typer.main.get_command(app)
    ctx = group.context_class(group)
    for name, (_, _, line) in LazyGroup.commands_table.items():
        command = group.get_command(ctx, name)
        assert " ".join((command.help or "").split("\n\n")[0].split()) == line, name
    probe = "import sys, zsclip.cli, zsclip.cli.group; print(sorted(m for m in sys.modules if m.startswith('zsclip.')))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert "zsclip.cli.classify" not in loaded and "zsclip.backends" not in loaded


def test_the_callable_packages_show_the_functions_signature():
    import inspect

    import zsclip

    assert list(inspect.signature(zsclip.classify).parameters)[:3] == ["model", "classifier", "paths"]
    assert list(inspect.signature(zsclip.evaluate).parameters)[:2] == ["model", "dataset"]


def test_a_mistyped_command_is_told_the_close_one():
    result = runner.invoke(app, ["clasify", "x"])
    assert result.exit_code == 2 and "Did you mean 'classify'?" in result.stderr


def test_the_documented_submodule_and_the_callable_packages_import_and_pickle():
    import pickle

    from zsclip.report import write_report

    import zsclip

    assert write_report is zsclip.evaluate.report.write_report
    assert pickle.loads(pickle.dumps(zsclip.classify)) is zsclip.classify.classify
    with pytest.raises(TypeError, match=r"evaluate\(\) got an unexpected keyword argument 'bogus'"):
        zsclip.evaluate(None, "x", bogus=1)


def test_ray_options_alone_do_not_choose_ray():
    from zsclip.engines import reading
    from zsclip.engines.ray import RayOptions

    _, runtime = reading(None, None, {"ray": RayOptions(actors=1)})
    assert runtime.engine == "local"
    _, runtime = reading(None, None, {"engine": "ray"})
    assert runtime.engine == "ray"


def test_a_new_data_set_kind_says_its_own_splits(monkeypatch):
    import zsclip.datasets as datasets

    seen = []
    monkeypatch.setitem(datasets.KINDS, "mine:", lambda name, root, classnames, split, task: seen.append(split))
    datasets.load_dataset("mine:x", split="train")
    assert seen == ["train"]


def test_a_file_timeout_that_is_not_a_number_of_seconds_is_a_usage_error(tmp_path):
    for value in ("nan", "inf", "0"):
        result = runner.invoke(app, ["classify", str(tmp_path), "-c", "a,b", "--file-timeout", value])
        assert result.exit_code == 2 and "--file-timeout" in result.stderr and "Traceback" not in result.output
