"""The proposed retrieval commands, end to end through the CLI: `zsclip index`, `zsclip search`, and
`zsclip eval --task retrieval` (zsclip/cli/index.py, zsclip/cli/search.py, zsclip/cli/eval.py)."""

import csv
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from zsclip.cli import app

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def photos(tmp_path) -> Path:
    """The 12 shipped example shapes plus one broken file."""
    folder = tmp_path / "photos"
    shutil.copytree(REPO / "examples" / "shapes", folder)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\ntruncated")
    return folder


def _one_line_error(result, code: int, *fragments: str) -> None:
    assert result.exit_code == code, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_index_counts_then_reuses_and_lists_failures(photos, tmp_path):
    first = run("index", photos, "--model", "shapes", "--workers", "0", "--failures", tmp_path / "bad.jsonl")
    assert first.exit_code == 0, first.stderr
    counts = json.loads(first.stdout)
    assert (counts["new"], counts["reused"], counts["skipped"]) == (12, 0, 1)
    assert [json.loads(line)["path"].endswith("broken.png") for line in (tmp_path / "bad.jsonl").open()] == [True]
    assert "12 new" in first.stderr

    (photos / "red_star.png").rename(photos / "renamed.png")
    (photos / "green_star.png").unlink()
    second = json.loads(run("index", photos, "--model", "shapes", "--workers", "0").stdout)
    assert (second["new"], second["reused"], second["moved"], second["missing"]) == (0, 11, 1, 2)
    third = json.loads(run("index", photos, "--model", "shapes", "--prune", "--workers", "0").stdout)
    assert third["pruned"] == 2


def test_index_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    _one_line_error(run("index", tmp_path / "empty", "--model", "shapes"), 2, "no images found")
    _one_line_error(run("index", tmp_path / "nope"), 2, "no such file")
    _one_line_error(run("index", REPO / "examples" / "shapes", "--model", "no-such-model"), 2, "no-such-model")


def test_search_by_text_finds_the_red_circle_first_in_every_format(photos, tmp_path):
    result = run("search", "red circle", photos, "--model", "shapes", "--top", "3", "--format", "json")
    assert result.exit_code == 0, result.stderr
    hits = json.loads(result.stdout)
    assert [h["rank"] for h in hits] == [1, 2, 3] and Path(hits[0]["path"]).name == "red_circle.png"
    assert hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]

    lines = run("search", "red circle", photos, "-m", "shapes", "--top", "2", "--format", "jsonl").stdout.splitlines()
    assert [json.loads(line)["rank"] for line in lines] == [1, 2]
    rows = list(csv.DictReader(run("search", "red circle", photos, "-m", "shapes", "-f", "csv").stdout.splitlines()))
    assert len(rows) == 10 and set(rows[0]) == {"rank", "path", "score"}
    table = run("search", "red circle", photos, "-m", "shapes", "-f", "table", "--top", "1").stdout
    assert "red_circle.png" in table

    out = tmp_path / "hits.csv"
    assert run("search", "red circle", photos, "-m", "shapes", "--output", out).exit_code == 0
    assert next(csv.DictReader(out.open()))["path"].endswith("red_circle.png")  # format from the extension


def test_search_indexes_first_threshold_report_templates_and_query_arithmetic(photos, tmp_path):
    result = run("search", "blue square", photos, "-m", "shapes", "-t", "shapes", "--threshold", "0.99", "-f", "json")
    assert result.exit_code == 0 and json.loads(result.stdout) == []
    assert "indexed 12" in result.stderr  # not indexed before: indexed first

    report = tmp_path / "report"
    result = run("search", "red circle", photos, "-m", "shapes", "--top", "4", "--report", report, "-f", "json")
    page = (report / "search.html").read_text()
    positions = [page.index(h["path"]) for h in json.loads(result.stdout)]
    assert positions == sorted(positions) and page.count("data:image/jpeg") == 4

    swapped = run("search", "red circle", photos, "-m", "shapes", "--subtract", "circle", "--add", "star", "-f", "json")
    assert Path(json.loads(swapped.stdout)[0]["path"]).name == "red_star.png"


def test_search_by_image_treats_arguments_as_paths(photos):
    result = run("search", photos, "--image", photos / "orange_circle.png", "-m", "shapes", "-f", "json", "--top", "1")
    assert result.exit_code == 0, result.stderr
    hit = json.loads(result.stdout)[0]
    assert Path(hit["path"]).name == "orange_circle.png" and hit["score"] == pytest.approx(1.0, abs=1e-4)


def test_search_errors(photos, tmp_path):
    _one_line_error(run("search", photos, "--image", photos / "broken.png", "-m", "shapes"), 2, "broken.png")
    (tmp_path / "empty").mkdir()
    _one_line_error(run("search", "a dog", tmp_path / "empty", "-m", "shapes"), 2, "zsclip index")
    _one_line_error(run("search", "a dog", photos, "-m", "no-such-model"), 2, "no-such-model")
    _one_line_error(run("search", "a dog", photos, "-m", "shapes", "--top", "0"), 2, "--top 0")
    _one_line_error(run("search", "a dog", photos, "-m", "shapes", "-f", "xml"), 2, "--format xml")
    _one_line_error(run("search", "-m", "shapes"), 2, "QUERY")


def test_eval_retrieval_json_and_report(tmp_path):
    from zsclip.datasets.shapes import write_dataset

    write_dataset(tmp_path / "shapes", n=40, seed=2, eval_per_class=0)
    result = run("eval", tmp_path / "shapes", "--task", "retrieval", "-m", "shapes", "--recall-k", "1,5", "-f", "json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert set(summary["metrics"]) == {f"{d}_retrieval_recall@{k}" for d in ("image", "text") for k in (1, 5)}
    assert summary["images"] == summary["captions"] == 40

    report = tmp_path / "report"
    csv_spec = f"csv:{tmp_path / 'shapes' / 'captions.csv'}"
    result = run("eval", csv_spec, "--task", "retrieval", "-m", "shapes", "--report", report, "-f", "json")
    assert result.exit_code == 0, result.stderr
    assert json.loads((report / "metrics.json").read_text()) == json.loads(result.stdout)
    assert (report / "ranks.csv").is_file() and (report / "report.html").is_file()
    _one_line_error(run("eval", tmp_path / "shapes", "--task", "retrieval", "--recall-k", "x"), 2, "--recall-k")


def test_index_to_parquet_then_search_it_like_the_store(photos, tmp_path):
    out = tmp_path / "vectors"
    exported = run("index", photos, "--model", "shapes", "--workers", "0", "--embeddings-out", out)
    assert exported.exit_code == 0, exported.stderr
    assert json.loads(exported.stdout)["embeddings"] == 12 and list(out.glob("*.parquet"))
    from_parquet = run("search", "red circle", "--embeddings", out, "--model", "shapes", "-f", "json", "--top", "5")
    from_store = run("search", "red circle", photos, "--model", "shapes", "-f", "json", "--top", "5", "--workers", "0")
    assert from_parquet.exit_code == 0 and from_store.exit_code == 0, from_parquet.stderr + from_store.stderr
    a, b = json.loads(from_parquet.stdout), json.loads(from_store.stdout)
    assert [h["path"] for h in a] == [h["path"] for h in b]
    assert [h["score"] for h in a] == pytest.approx([h["score"] for h in b], abs=1e-5)


def test_index_shards_cover_every_image_once(photos):
    shards = [json.loads(run("index", photos, "--model", "shapes", "--workers", "0", "--shard", f"{i}/3").stdout)
              for i in range(3)]  # fmt: skip
    assert sum(s["indexed"] for s in shards) == 12
    _one_line_error(run("index", photos, "--model", "shapes", "--shard", "3/3"), 2, "--shard")


def test_a_name_that_is_not_utf8_is_skipped_with_a_reason_not_a_traceback(photos):
    import os

    odd = os.fsencode(photos) + b"/bad\xff.png"
    with open(odd, "wb") as f:
        f.write((photos / "red_circle.png").read_bytes())
    for target in (photos, os.fsdecode(odd)):
        result = run("index", target, "--model", "shapes", "--workers", "0")
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
        assert "not valid UTF-8" in result.stderr


def test_embeddings_out_is_checked_first_and_shards_write_beside_each_other(photos, tmp_path):
    (tmp_path / "a-file").write_text("x")
    _one_line_error(
        run("index", photos, "--model", "shapes", "--embeddings-out", tmp_path / "a-file"), 2, "not a folder"
    )
    _one_line_error(run("index", photos, "--model", "shapes", "--embeddings-out", photos), 2, "holds other files")
    out = tmp_path / "vectors"
    for i in range(2):
        done = run("index", photos, "--model", "shapes", "--workers", "0", "--shard", f"{i}/2", "--embeddings-out", out)
        assert done.exit_code == 0, done.stderr
    found = json.loads(run("search", "red circle", "--embeddings", out, "--model", "shapes", "-f", "json",
                           "--top", "50").stdout)  # fmt: skip
    assert len(found) == 12 and all(Path(h["path"]).is_absolute() for h in found)


def test_a_path_with_embeddings_is_a_usage_error(photos, tmp_path):
    out = tmp_path / "vectors"
    assert run("index", photos, "--model", "shapes", "--workers", "0", "--embeddings-out", out).exit_code == 0
    _one_line_error(run("search", "red", photos, "--embeddings", out, "--model", "shapes"), 2, "PATH does not apply")


def test_a_reexport_with_other_sharding_never_returns_an_image_twice(photos, tmp_path):
    """Issue 21 item 8, through the CLI."""
    out = tmp_path / "vectors"
    base = ["index", photos, "--model", "shapes", "--workers", "0", "--embeddings-out", out]
    assert run(*base).exit_code == 0
    for i in range(2):
        assert run(*base, "--shard", f"{i}/2").exit_code == 0
    found = json.loads(
        run("search", "red circle", "--embeddings", out, "-m", "shapes", "-f", "json", "--top", "50").stdout
    )
    assert len(found) == 12 == len({h["path"] for h in found})


def test_search_of_an_export_uses_the_model_it_was_made_with(photos, tmp_path):
    """Issue 21 item 19: without --model, search loaded the default model (ViT-B-32:openai, not downloadable)."""
    out = tmp_path / "vectors"
    assert run("index", photos, "--model", "shapes", "--workers", "0", "--embeddings-out", out).exit_code == 0
    result = run("search", "red circle", "--embeddings", out, "-f", "json", "--top", "1")
    assert result.exit_code == 0, result.stderr
    assert Path(json.loads(result.stdout)[0]["path"]).name.startswith("red_circle")


def test_search_says_in_one_line_how_many_files_it_could_not_read(photos):
    """Issue 21 item 19: every search repeated the skip line of every unreadable file."""
    for _ in range(2):
        result = run("search", "red circle", photos, "-m", "shapes", "--workers", "0", "-f", "json")
        assert result.exit_code == 0, result.stderr
        assert "skipped" not in result.stderr and "broken.png" not in result.stderr
        assert f"1 file under {photos} could not be read and is not searched" in result.stderr


def test_a_captions_csv_without_task_is_scored_for_retrieval(tmp_path):
    """Issue 21 item 19: `eval captions.csv` said 'unknown data set'; the folder `zsclip data shapes` writes was
    scored as classification over its two folders."""
    from zsclip.datasets.shapes import write_dataset

    write_dataset(tmp_path / "shapes", n=20, seed=2, eval_per_class=1)
    explicit = run("eval", tmp_path / "shapes" / "captions.csv", "--task", "retrieval", "-m", "shapes", "-f", "json")
    for target in (tmp_path / "shapes" / "captions.csv", f"csv:{tmp_path / 'shapes' / 'captions.csv'}",
                   tmp_path / "shapes"):  # fmt: skip
        result = run("eval", target, "-m", "shapes", "-f", "json")
        assert result.exit_code == 0, result.stderr
        assert json.loads(result.stdout)["metrics"] == json.loads(explicit.stdout)["metrics"]
        assert "holds captions (filepath,caption): scored for retrieval" in result.stderr
    folders = run("eval", tmp_path / "shapes" / "eval", "-m", "shapes", "-f", "json")  # class folders: as before
    assert folders.exit_code == 0 and "acc1" in json.loads(folders.stdout)["metrics"]
