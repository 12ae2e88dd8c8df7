import csv

from typer.testing import CliRunner

from zsclip.cli import app
from zsclip.datasets.shapes import COLOURS, COMPOSITIONS, HELD_OUT, SHAPES, write_dataset


def test_dataset_layout_and_held_out_pairs_never_in_captions(tmp_path):
    result = CliRunner().invoke(app, ["data", "shapes", str(tmp_path / "d"), "--n", "300", "--eval-per-class", "2"])
    assert result.exit_code == 0, result.stderr
    out = tmp_path / "d"
    rows = list(csv.DictReader(open(out / "captions.csv")))
    assert len(rows) == 300 and list(rows[0]) == ["filepath", "caption"]
    assert all((out / r["filepath"]).is_file() for r in rows)
    text = " | ".join(r["caption"] for r in rows)
    for colour, shape in HELD_OUT:
        assert f"{colour} {shape}" not in text
        assert f"the {shape} is {colour}" not in text and f"{shape} coloured {colour}" not in text
    # every colour and every shape still appears in training
    assert all(c in text for c in COLOURS) and all(s in text for s in SHAPES)
    assert len({r["caption"] for r in rows}) > 100  # wording varies
    folders = sorted(p.name for p in (out / "eval").iterdir())
    assert folders == sorted(f"{c} {s}" for c, s in COMPOSITIONS) and len(folders) == 36
    assert all(len(list((out / "eval" / f).iterdir())) == 2 for f in folders)


def test_same_seed_same_bytes(tmp_path):
    write_dataset(tmp_path / "a", n=20, seed=5, eval_per_class=1)
    write_dataset(tmp_path / "b", n=20, seed=5, eval_per_class=1)
    write_dataset(tmp_path / "c", n=20, seed=6, eval_per_class=1)
    a = [p.read_bytes() for p in sorted((tmp_path / "a").rglob("*.png"))]
    assert a == [p.read_bytes() for p in sorted((tmp_path / "b").rglob("*.png"))]
    assert a != [p.read_bytes() for p in sorted((tmp_path / "c").rglob("*.png"))]
    assert (tmp_path / "a" / "captions.csv").read_text() == (tmp_path / "b" / "captions.csv").read_text()
