"""classify over a corpus of 20+ kinds of odd and bad files: valid ones are labelled, bad ones skipped with a
reason, non-images ignored, and the run finishes with exit 0."""

import faulthandler
import json
import os
import signal

import pytest
from typer.testing import CliRunner

from zsclip.cli import app
from zsclip.engines import ReadOptions

from .corpus import make_corpus


def test_classify_survives_every_kind_of_file(tiny_model_dir, tmp_path):
    root = tmp_path / "corpus"
    expected = make_corpus(root)
    assert sum(v.startswith("skip") for v in expected.values()) >= 15
    assert sum(v != "ignore" for v in expected.values()) >= 30
    failures = tmp_path / "failures.jsonl"
    result = CliRunner().invoke(
        app, ["classify", str(root), "-c", "a,b", "-m", str(tiny_model_dir), "-t", "photo", "--failures",
              str(failures), "--workers", "1"],
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "Traceback" not in result.stderr
    done = {os.path.relpath(json.loads(line)["path"], root) for line in result.stdout.splitlines()}
    skipped = {
        os.path.relpath(r["path"], root): r["reason"] for r in map(json.loads, failures.read_text().splitlines())
    }
    for name, outcome in expected.items():
        if outcome == "ok":
            assert name in done, f"{name} was not classified ({skipped.get(name)})"
        elif outcome.startswith("skip"):
            assert outcome[6:] in skipped.get(name, ""), f"{name}: {skipped.get(name)!r}, expected {outcome[6:]!r}"
        else:
            assert name not in done and name not in skipped
    assert len(skipped) == sum(v.startswith("skip") for v in expected.values())


def test_device_path_survives_the_corpus(tiny_model_dir, tmp_path):
    import zsclip
    from zsclip.engines import embed_stream
    from zsclip.pipeline.sources import expand_sources

    root = tmp_path / "corpus"
    expected = make_corpus(root)
    model = zsclip.load_model(str(tiny_model_dir))
    batches = list(embed_stream(model, expand_sources([root]), ReadOptions(batch_size=8, decode_on="device")))
    done = {os.path.relpath(p, root) for b in batches for p in b.paths}
    skipped = {os.path.relpath(p, root) for b in batches for p, _ in b.skipped}
    assert done == {n for n, v in expected.items() if v == "ok"}
    assert skipped == {n for n, v in expected.items() if v.startswith("skip")}


def test_eval_survives_every_kind_of_file(tiny_model_dir, tmp_path):
    data = tmp_path / "data"
    expected = {"cats": make_corpus(data / "cats"), "dogs": make_corpus(data / "dogs")}
    report = tmp_path / "report"
    result = CliRunner().invoke(
        app, ["eval", str(data), "-m", str(tiny_model_dir), "-t", "photo", "--report", str(report), "-f", "json",
              "--workers", "1"],
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "Traceback" not in result.stderr
    ok = {f"{c}/{n}" for c, e in expected.items() for n, v in e.items() if v == "ok"}
    bad = {f"{c}/{n}": v[6:] for c, e in expected.items() for n, v in e.items() if v.startswith("skip")}
    summary = json.loads(result.stdout)
    assert (summary["images"], summary["skipped"]) == (len(ok), len(bad))
    predicted = [line.split(",")[0] for line in (report / "predictions.csv").read_text().splitlines()[1:]]
    assert {os.path.relpath(p, data) for p in predicted} == ok
    import csv

    skipped = {os.path.relpath(r["path"], data): r["reason"] for r in csv.DictReader(open(report / "skipped.csv"))}
    assert skipped.keys() == bad.keys()
    assert all(bad[name] in reason for name, reason in skipped.items())


@pytest.mark.parametrize("workers", [0, 1])
def test_train_survives_every_kind_of_file(tmp_path, capsys, monkeypatch, workers):
    import csv

    from zsclip.datasets.shapes import write_dataset
    from zsclip.train import TrainConfig, train

    shapes = tmp_path / "shapes"
    write_dataset(shapes, n=64, seed=1, size=64, eval_per_class=0)
    expected = make_corpus(shapes / "corpus")
    rows = list(csv.reader(open(shapes / "captions.csv")))[1:]
    rows += [[f"corpus/{n}", "a red circle"] for n, v in expected.items() if v != "ignore"]
    with open(shapes / "captions.csv", "w", newline="") as f:
        csv.writer(f).writerows([["filepath", "caption"], *rows])
    out = tmp_path / "model"
    cfg = TrainConfig(data=str(shapes), config="shapes-rn", output=str(out), epochs=2, batch_size=len(rows),
                      warmup=1, templates="shapes", workers=workers)  # fmt: skip
    if workers:  # and a file that kills its decoder, as a corrupt file can in a C library
        import zsclip.train

        real = zsclip.train.load_image

        def crashing(path, *a, **kw):
            if path.endswith("very_wide.png"):
                faulthandler.disable()
                os.kill(os.getpid(), signal.SIGSEGV)
            return real(path, *a, **kw)

        monkeypatch.setattr(zsclip.train, "load_image", crashing)
        expected["very_wide.png"] = "skip: the decoder crashed on this file (worker killed by SIGSEGV)"
    metrics = train(cfg)
    assert metrics["epoch"] == 2
    err = capsys.readouterr().err
    bad = {n: v[6:] for n, v in expected.items() if v.startswith("skip")}
    for name, reason in bad.items():
        line = f"skipped {shapes / 'corpus' / name}: "
        assert err.count(line) == 1, f"{name} not reported once"  # once, though two epochs read it
        assert reason in err.split(line)[1].splitlines()[0]
    log = list(csv.DictReader(open(out / "train_log.csv")))
    assert [int(r["skipped"]) for r in log] == [len(bad), len(bad)]


def test_a_list_file_naming_every_kind_skips_each_non_image_with_a_reason(tiny_model_dir, tmp_path):
    root = tmp_path / "corpus"
    expected = make_corpus(root)
    listing = tmp_path / "all.txt"
    listing.write_text("".join(f"{root / name}\n" for name in expected))
    failures = tmp_path / "failures.jsonl"
    result = CliRunner().invoke(
        app, ["classify", f"@{listing}", "-c", "a,b", "-m", str(tiny_model_dir), "-t", "photo", "--failures",
              str(failures)],
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    skipped = {
        os.path.relpath(r["path"], root): r["reason"] for r in map(json.loads, failures.read_text().splitlines())
    }
    done = {os.path.relpath(json.loads(line)["path"], root) for line in result.stdout.splitlines()}
    assert done == {n for n, v in expected.items() if v == "ok"}
    # Named explicitly, non-images are not ignored but skipped, each with its reason; a folder in the list is
    # walked as on the command line (the one named folder.jpg holds nothing).
    assert "folder.jpg" not in skipped
    assert skipped["notes.txt"] == skipped["data.csv"] == "not a recognised image format"
    assert skipped.keys() == {n for n, v in expected.items() if v != "ok"} - {"folder.jpg"}
