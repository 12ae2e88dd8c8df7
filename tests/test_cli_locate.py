"""`zsclip locate` through the real CLI."""

from __future__ import annotations

import csv
import io
import itertools
import json

import pytest
from typer.testing import CliRunner

pytest.importorskip("av", reason="video needs PyAV: pip install 'zsclip[video]'")

from zsclip.cli import app
from zsclip.video.locate import temporal_iou

from .videos import shapes_video

runner = CliRunner()
TIMELINE = [(1, 3, "red", "circle"), (4, 6, "blue", "square"), (7, 9, "green", "triangle")]


def run(*args):
    return runner.invoke(app, ["locate", *map(str, args)])


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return shapes_video(tmp_path_factory.mktemp("videos") / "shapes.mp4", TIMELINE)


def test_json_has_the_documented_shape_and_finds_the_shapes(video):
    result = run(video, "--text", "red circle", "--text", "green triangle", "--model", "shapes", "--format", "json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert set(data) == {"video", "duration", "fps", "frames", "segments"}
    assert data["fps"] == 2 and data["frames"] == 20 and data["duration"] == 10
    assert [s["text"] for s in data["segments"]] == ["red circle", "green triangle"]
    for s, truth in zip(data["segments"], [(1, 3), (7, 9)], strict=True):
        assert temporal_iou((s["start"], s["end"]), truth) >= 0.8


def test_ordered_narration_from_a_text_file(video, tmp_path):
    narration = tmp_path / "narration.txt"
    narration.write_text("red circle\nblue square\ngreen triangle\n")
    result = run(video, "--text-file", narration, "--ordered", "--model", "shapes", "--format", "json")
    assert result.exit_code == 0, result.stderr
    segments = json.loads(result.stdout)["segments"]
    assert [s["text"] for s in segments] == ["red circle", "blue square", "green triangle"]
    assert all(a["end"] <= b["start"] for a, b in itertools.pairwise(segments))


def test_several_videos_jsonl_and_csv(video, tmp_path):
    other = shapes_video(tmp_path / "other.mp4", [(0, 2, "red", "circle")], seconds=4)
    lines = run(video, other, "--text", "red circle", "--model", "shapes", "--format", "jsonl").stdout.splitlines()
    assert [json.loads(line)["video"] for line in lines] == [str(video), str(other)]
    result = run(video, other, "--text", "red circle", "--top", "2", "--model", "shapes", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert list(rows[0]) == ["video", "text", "start", "end", "score", "strength", "found"]
    assert {r["video"] for r in rows} == {str(video), str(other)}


def test_plot_and_report(video, tmp_path):
    result = run(video, "--text", "red circle", "--model", "shapes", "--plot", tmp_path / "curves.png",
                 "--report", tmp_path / "report", "--format", "json")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert {p.name for p in (tmp_path / "report").iterdir()} == {"result.json", "plot-1.png", "report.html"}


def test_missing_text_is_a_usage_error(video):
    result = run(video, "--model", "shapes")
    assert result.exit_code == 2
    assert "no text given" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_bad_videos_are_one_line_errors(tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    result = run(text, "--text", "x", "--model", "shapes")
    assert result.exit_code == 1 and "not a readable video" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    result = run(tmp_path / "missing.mp4", "--text", "x", "--model", "shapes")
    assert result.exit_code == 2 and "missing.mp4: no such file" in result.stderr


def test_a_bad_video_among_good_ones_is_skipped(video, tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    result = run(video, bad, "--text", "red circle", "--model", "shapes", "--format", "jsonl")
    assert result.exit_code == 0
    assert len(result.stdout.splitlines()) == 1 and "skipped" in result.stderr and "bad.mp4" in result.stderr


def test_truncated_video_warns_on_stderr_and_still_answers(tmp_path):
    whole = shapes_video(tmp_path / "whole.mkv", TIMELINE, gop=10)
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size * 6 // 10])
    result = run(cut, "--text", "red circle", "--model", "shapes", "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert "truncated" in result.stderr and json.loads(result.stdout)["duration"] < 8


def test_a_text_that_never_appears_is_not_found_and_top_keeps_the_rule(video):
    """Issue 21 item 12: a segment for a text that never appears was reported, scored like a real one."""
    result = run(video, "--text", "red circle", "--text", "yellow star", "--text", "purple hexagon", "--top", "2",
                 "--model", "shapes", "--format", "json")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    segments = json.loads(result.stdout)["segments"]
    by_text = {t: [s for s in segments if s["text"] == t] for t in ("red circle", "yellow star", "purple hexagon")}
    assert by_text["red circle"][0]["found"] and by_text["red circle"][0]["strength"] >= 2
    assert not any(s["found"] for t in ("yellow star", "purple hexagon") for s in by_text[t])
    assert not any(s["found"] for s in by_text["red circle"][1:])  # later runs of red circle: nothing there
    assert "segments are not found" in result.stderr
    table = run(video, "--text", "yellow star", "--model", "shapes", "--format", "csv")
    assert next(csv.DictReader(io.StringIO(table.stdout)))["found"] == "no"


def test_min_score_is_an_absolute_bar_on_top_of_the_rule(video):
    found = run(video, "--text", "red circle", "--model", "shapes", "--format", "json", "--min-score", "0.3")
    assert json.loads(found.stdout)["segments"][0]["found"]
    strict = run(video, "--text", "red circle", "--model", "shapes", "--format", "json", "--min-score", "0.99")
    assert not json.loads(strict.stdout)["segments"][0]["found"]
    bad = run(video, "--text", "red circle", "--model", "shapes", "--min-score", "2")
    assert bad.exit_code == 2 and "--min-score 2.0: must be a cosine similarity" in bad.stderr


def test_a_video_shorter_than_half_a_sample_interval_has_one_sample(tmp_path):
    """Issue 21 item 16: a 0.2 s clip was refused as 'zero-length' (its first sample time fell after its end)."""
    clip = shapes_video(tmp_path / "blink.mp4", [(0, 1, "red", "circle")], seconds=0.2, rate=10)
    result = run(clip, "--text", "red circle", "--model", "shapes", "--format", "json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["frames"] == 1 and data["duration"] == pytest.approx(0.2, abs=0.05)
    assert data["segments"][0]["start"] == 0 and data["segments"][0]["end"] <= 0.25


def test_a_text_file_named_mp4_is_not_blamed_on_a_cut_recording(tmp_path):
    """Issue 21 item 19."""
    fake = tmp_path / "notes.mp4"
    fake.write_text("these are my notes, not a video\n" * 20)
    result = run(fake, "--text", "red circle", "--model", "shapes")
    assert result.exit_code == 1 and "cut short while recording" not in result.stderr
    assert "not a video file (it holds text)" in result.stderr
