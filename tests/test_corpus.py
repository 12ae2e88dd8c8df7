"""classify over a corpus of 20+ kinds of odd and bad files: valid ones are labelled, bad ones skipped with a
reason, non-images ignored, and the run finishes with exit 0."""

import json
import os

from typer.testing import CliRunner

from zsclip.cli import app

from .corpus import make_corpus


def test_classify_survives_every_kind_of_file(tiny_model_dir, tmp_path):
    root = tmp_path / "corpus"
    expected = make_corpus(root)
    assert sum(v != "ignore" for v in expected.values()) >= 20
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
        elif outcome == "skip":
            assert skipped.get(name), f"{name} was not skipped"
        else:
            assert name not in done and name not in skipped
    assert len(skipped) == sum(v == "skip" for v in expected.values())


def test_device_path_survives_the_corpus(tiny_model_dir, tmp_path):
    import zsclip
    from zsclip.encode import embed_stream
    from zsclip.images import expand_sources

    root = tmp_path / "corpus"
    expected = make_corpus(root)
    model = zsclip.load_model(str(tiny_model_dir))
    batches = list(embed_stream(model, expand_sources([root]), batch_size=8, decode_on="device"))
    done = {os.path.relpath(p, root) for b in batches for p in b.paths}
    skipped = {os.path.relpath(p, root) for b in batches for p, _ in b.skipped}
    assert done == {n for n, v in expected.items() if v == "ok"}
    assert skipped == {n for n, v in expected.items() if v == "skip"}
