"""zsclip.locate: segment search against brute force, and finding shapes in short videos with the shipped model."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest

from zsclip.core.errors import UsageError
from zsclip.video.locate import best_segment, check_options, ordered_segments, smooth, temporal_iou, top_segments
from zsclip.video.report import render

# -- the search, against brute force (no video needed) -----------------------------------------------------


def brute_best(d, lmin, lmax):
    best = (-1, -1, -math.inf)
    for i in range(len(d)):
        for j in range(i + lmin, min(len(d), i + lmax) + 1):
            if d[i:j].sum() > best[2] + 1e-12:
                best = (i, j, d[i:j].sum())
    return best


@pytest.mark.parametrize("seed", range(30))
def test_best_segment_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    d = rng.normal(size=int(rng.integers(1, 40)))
    lmin = int(rng.integers(1, 5))
    lmax = int(rng.integers(lmin, 45))
    i, j, total = best_segment(d, lmin, lmax)
    ref = brute_best(d, lmin, lmax)
    if ref[0] < 0:
        assert i < 0
    else:
        assert total == pytest.approx(ref[2]) and lmin <= j - i <= lmax
        assert d[i:j].sum() == pytest.approx(total)


def brute_ordered(ds, lmin, lmax):
    k, m = ds.shape
    best, runs = -math.inf, None

    def place(t, start, total, chosen):
        nonlocal best, runs
        if t == k:
            if total > best + 1e-12:
                best, runs = total, list(chosen)
            return
        for i in range(start, m):
            for j in range(i + lmin, min(m, i + lmax) + 1):
                place(t + 1, j, total + ds[t, i:j].sum(), [*chosen, (i, j)])

    place(0, 0, 0.0, [])
    return best, runs


@pytest.mark.parametrize("seed", range(12))
def test_ordered_segments_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    k, m = int(rng.integers(1, 4)), int(rng.integers(4, 11))
    ds = rng.normal(size=(k, m))
    lmin = int(rng.integers(1, 3))
    lmax = int(rng.integers(lmin, m + 1))
    if k * lmin > m:
        return
    runs = ordered_segments(ds, lmin, lmax)
    ref_total, _ = brute_ordered(ds, lmin, lmax)
    assert sum(ds[t, i:j].sum() for t, (i, j) in enumerate(runs)) == pytest.approx(ref_total)
    assert all(lmin <= j - i <= lmax for i, j in runs)
    assert all(runs[t][1] <= runs[t + 1][0] for t in range(k - 1))


def test_top_segments_do_not_overlap_and_come_best_first():
    d = np.array([-1, 2, 2, -1, -1, 3, 3, 3, -1, 1, -1], dtype=float)
    found = top_segments(d, 1, 3, 3)  # at most 3 long: (1, 8) would merge the two best
    assert [(i, j) for i, j, _ in found] == [(5, 8), (1, 3), (9, 10)]
    assert [round(s, 6) for _, _, s in found] == [9, 4, 1]


def test_smoothing_keeps_a_step_in_place_and_gaps_as_gaps():
    curve = np.array([0, 0, 0, 1, 1, 1, np.nan, 1], dtype=float)
    out = smooth(curve, 3)
    assert out[2] == pytest.approx(1 / 3) and out[3] == pytest.approx(2 / 3)
    assert np.isnan(out[6]) and out[7] == 1


def test_usage_errors_come_before_any_work():
    with pytest.raises(UsageError, match="no text given"):
        check_options([])
    with pytest.raises(UsageError, match="--max-seconds 1.0 is less than --min-seconds 2.0"):
        check_options(["a"], min_seconds=2.0, max_seconds=1.0)
    with pytest.raises(UsageError, match="--fps 0"):
        check_options(["a"], fps=0)
    with pytest.raises(UsageError, match="--top 0"):
        check_options(["a"], top=0)
    with pytest.raises(UsageError, match="shorter than one sample"):
        check_options(["a"], fps=1, max_seconds=0.5)


# -- shapes in videos, with the shipped model -----------------------------------------------------------------
av = pytest.importorskip("av", reason="video needs PyAV: pip install 'zsclip[video]'")

import zsclip  # noqa: E402

from .videos import shapes_video  # noqa: E402


@pytest.fixture(scope="module")
def shapes_model():
    return zsclip.load_model("shapes", device="cpu")


def assert_found(result, truth: dict[str, tuple[float, float]]):
    for s in result.segments:
        iou = temporal_iou((s.start, s.end), truth[s.text])
        assert iou >= 0.8, (s, truth[s.text], iou)


def test_each_shape_is_located_where_it_is_on_screen(tmp_path, shapes_model):
    path = shapes_video(tmp_path / "v.mp4", [(2, 5, "red", "circle"), (6, 9, "blue", "square")])
    result = zsclip.locate(shapes_model, path, ["red circle", "blue square"], fps=2)
    assert [s.text for s in result.segments] == ["red circle", "blue square"]
    assert_found(result, {"red circle": (2, 5), "blue square": (6, 9)})
    assert result.frames == 20 and result.duration == pytest.approx(10)
    assert result.curves.shape == (2, 20) and len(result.times) == 20


def test_top_n_finds_both_appearances(tmp_path, shapes_model):
    path = shapes_video(
        tmp_path / "v.mp4", [(1, 3, "red", "circle"), (4, 6, "blue", "square"), (7, 9.5, "red", "circle")]
    )
    result = zsclip.locate(shapes_model, path, ["red circle"], fps=2, top=2)
    assert len(result.segments) == 2
    truth = [(7, 9.5), (1, 3)]  # the longer appearance has the larger sum: best first
    for s, t in zip(result.segments, truth, strict=True):
        assert temporal_iou((s.start, s.end), t) >= 0.8, (s, t)


def test_ordered_narration_gets_in_order_segments(tmp_path, shapes_model):
    timeline = [(1, 3, "red", "circle"), (4, 6, "blue", "square"), (7, 9, "green", "triangle")]
    path = shapes_video(tmp_path / "v.mp4", timeline)
    texts = ["red circle", "blue square", "green triangle"]
    result = zsclip.locate(shapes_model, path, texts, fps=2, ordered=True)
    assert [s.text for s in result.segments] == texts
    assert all(a.end <= b.start for a, b in zip(result.segments, result.segments[1:], strict=False))
    assert_found(result, {t: (a, b) for t, (a, b, _, _) in zip(texts, timeline, strict=True)})


def test_max_seconds_bounds_the_segment(tmp_path, shapes_model):
    path = shapes_video(tmp_path / "v.mp4", [(2, 7, "red", "circle")])
    result = zsclip.locate(shapes_model, path, ["red circle"], fps=2, max_seconds=2)
    (s,) = result.segments
    assert s.end - s.start <= 2 and s.start >= 2 and s.end <= 7


def test_variable_frame_rate_video(tmp_path, shapes_model):
    times = [i * 0.1 for i in range(40)] + [4 + i * 0.25 for i in range(24)]  # 10 fps, then 4 fps
    path = shapes_video(tmp_path / "vfr.mp4", [(2, 5, "red", "circle"), (6, 9, "blue", "square")], times=times)
    result = zsclip.locate(shapes_model, path, ["red circle", "blue square"], fps=2)
    assert_found(result, {"red circle": (2, 5), "blue square": (6, 9)})
    assert any("variable frame rate" in w for w in result.warnings)


def test_truncated_video_is_used_as_far_as_it_decodes(tmp_path, shapes_model):
    whole = shapes_video(tmp_path / "whole.mkv", [(1, 3, "red", "circle"), (7, 9, "blue", "square")], gop=10)
    data = whole.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) * 6 // 10])
    result = zsclip.locate(shapes_model, cut, ["red circle"], fps=2)
    assert result.duration < 8
    assert_found(result, {"red circle": (1, 3)})
    assert any("truncated" in w for w in result.warnings)


def test_second_query_with_a_new_text_encodes_no_frame(tmp_path, shapes_model):
    path = shapes_video(tmp_path / "v.mp4", [(2, 5, "red", "circle"), (6, 9, "blue", "square")])
    first = zsclip.locate(shapes_model, path, ["red circle"], fps=2)
    second = zsclip.locate(shapes_model, path, ["blue square"], fps=2)
    assert first.encoded == 20 and second.encoded == 0 and second.reused == 20
    assert_found(second, {"blue square": (6, 9)})


def test_outputs_json_shape_plot_and_report(tmp_path, shapes_model):
    from zsclip.video.report import write_plot, write_report

    path = shapes_video(tmp_path / "v.mp4", [(2, 5, "red", "circle")], seconds=6)
    result = zsclip.locate(shapes_model, path, ["red circle"], fps=2)
    out = io.StringIO()
    render([result], "json", out)
    data = json.loads(out.getvalue())
    assert set(data) == {"video", "duration", "fps", "frames", "segments"}
    assert set(data["segments"][0]) == {"text", "start", "end", "score", "found", "strength"}
    (png,) = write_plot([result], tmp_path / "curves.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = write_report([result], tmp_path / "report")
    html = page.read_text()
    assert "plot-1.png" in html and html.count("data:image/jpeg") == 5
    assert json.loads((tmp_path / "report" / "result.json").read_text())["segments"] == data["segments"]


def test_ordered_follows_the_narration_where_the_best_match_alone_would_not(tmp_path, shapes_model):
    # The red circle shows twice, longest first; the narration puts it after the blue square, so the DP must
    # take its second appearance, while the search per text takes the first.
    timeline = [(1, 3.5, "red", "circle"), (5, 7, "blue", "square"), (10, 12, "red", "circle")]
    path = shapes_video(tmp_path / "v.mp4", timeline, seconds=14)
    alone = zsclip.locate(shapes_model, path, ["blue square", "red circle"], fps=2)
    assert_found(alone, {"blue square": (5, 7), "red circle": (1, 3.5)})
    narrated = zsclip.locate(shapes_model, path, ["blue square", "red circle"], fps=2, ordered=True)
    assert_found(narrated, {"blue square": (5, 7), "red circle": (10, 12)})
