"""zsclip.video: sampling by timestamp, damaged and unusual files, the frame store."""

from __future__ import annotations

import os
import wave

import numpy as np
import pytest

pytest.importorskip("av", reason="video needs PyAV: pip install 'zsclip[video]'")

from zsclip.core.errors import UsageError, ZsclipError
from zsclip.video import FrameReader, embed_video, probe, write_video

from .videos import rotate_mp4, shapes_video


def grey_ramp(n: int, size=(32, 48)) -> list[np.ndarray]:
    """Frame i is flat grey level 5 * i, so a sample's value says which frame it took."""
    return [np.full((*size, 3), 5 * i % 256, np.uint8) for i in range(n)]


def read(path, fps, end=None):
    reader = FrameReader(str(path), fps, end=end if end is not None else probe(str(path)).duration)
    return {k: int(rgb.mean().round()) for k, rgb in reader}, reader


def test_samples_take_the_frame_shown_at_the_middle_of_each_interval(tmp_path):
    path = write_video(str(tmp_path / "ramp.mp4"), grey_ramp(40), fps=10, gop=10)
    values, reader = read(path, fps=2)
    assert reader.samples == 8 and not reader.missing
    # sample k stands for [k/2, (k+1)/2) s and shows the frame at (k + 0.5)/2 s: frame 5 k + 2 at 10 fps
    for k, value in values.items():
        assert abs(value - 5 * (5 * k + 2)) <= 3, (k, value)


def test_sparse_sampling_skips_groups_without_a_sample_and_seeks(tmp_path):
    path = write_video(str(tmp_path / "long.mp4"), grey_ramp(50, (16, 16)) * 8, fps=10, gop=10)  # 40 s
    values, reader = read(path, fps=0.1)  # a sample every 10 s: frame 50 of each 100
    assert sorted(values) == [0, 1, 2, 3]
    assert reader.decoded_frames < 150  # of 400: only the groups holding a sample


def test_variable_frame_rate_is_sampled_by_timestamp_and_noted(tmp_path):
    times = [i * 0.1 for i in range(30)] + [3 + i * 0.4 for i in range(10)]  # 10 fps, then 2.5 fps
    frames = grey_ramp(len(times))
    path = write_video(str(tmp_path / "vfr.mp4"), frames, fps=10, times=times)
    values, reader = read(path, fps=2, end=7.0)
    assert reader.vfr is not None
    for k, value in values.items():
        t = (k + 0.5) / 2
        shown = max(i for i, s in enumerate(times) if s <= t + 1e-9)
        assert abs(value - 5 * shown) <= 3, (k, value, shown)


def test_rotation_metadata_turns_frames_upright(tmp_path):
    frame = np.zeros((32, 64, 3), np.uint8)
    frame[:, :16] = 255  # a white band on the left edge; turned 90 degrees clockwise it is the top edge
    plain = write_video(str(tmp_path / "plain.mp4"), [frame] * 10, fps=10)
    path = rotate_mp4(tmp_path / "plain.mp4", tmp_path / "turned.mp4")
    reader = FrameReader(str(path), 2, end=1.0)
    rgb = next(iter(reader))[1]
    assert rgb.shape[:2] == (64, 32)
    assert rgb[:8].mean() > 200 and rgb[-8:].mean() < 50
    assert reader.rotation == 90
    assert next(iter(FrameReader(plain, 2, end=1.0)))[1].shape[:2] == (32, 64)


def test_truncated_file_uses_what_decodes_and_says_where_it_stops(tmp_path):
    whole = write_video(str(tmp_path / "whole.mkv"), grey_ramp(50), fps=10, gop=10)
    data = open(whole, "rb").read()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) * 6 // 10])
    values, reader = read(cut, fps=2)
    assert 4 <= len(values) < 10 and reader.truncated is not None
    assert reader.end < 5.0


def test_damaged_middle_leaves_a_gap_and_reports_it(tmp_path, shipped_shapes):
    whole = shapes_video(tmp_path / "whole.mp4", [], seconds=10, gop=10)
    data = bytearray(whole.read_bytes())
    n = len(data)
    a, b = n * 4 // 10, n * 55 // 100
    data[a:b] = np.random.default_rng(1).integers(0, 256, b - a, np.uint8).tobytes()
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data))
    frames = embed_video(shipped_shapes, str(damaged), fps=4, store=False)
    assert 0 < frames.frames < 40 and not frames.valid.all()
    assert np.isnan(frames.features[~frames.valid]).all()
    assert any("no frame decodes in" in w for w in frames.warnings)


@pytest.fixture(scope="module")
def shipped_shapes():
    import zsclip

    return zsclip.load_model("shapes", device="cpu")


def test_second_query_decodes_and_encodes_no_frame(tmp_path, shipped_shapes, monkeypatch):
    path = shapes_video(tmp_path / "v.mp4", [(2, 5, "red", "circle")], seconds=6)
    first = embed_video(shipped_shapes, str(path), fps=2)
    assert first.encoded == 12 and first.reused == 0

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr(FrameReader, "__iter__", no_decoding)
    again = embed_video(shipped_shapes, str(path), fps=2)
    assert again.encoded == 0 and again.reused == 12
    np.testing.assert_allclose(again.features, first.features, atol=1e-6)


def test_changed_file_is_scanned_again(tmp_path, shipped_shapes):
    path = shapes_video(tmp_path / "v.mp4", [], seconds=3)
    embed_video(shipped_shapes, str(path), fps=2)
    shapes_video(path, [(0, 3, "blue", "square")], seconds=3)  # same path, new content
    os.utime(path, ns=(1, 1))
    assert embed_video(shipped_shapes, str(path), fps=2).encoded == 6


def test_not_a_video(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("hello")
    with pytest.raises(ZsclipError, match=r"notes.mp4: not a readable video") as err:
        probe(str(path))
    assert "\n" not in str(err.value)


def test_no_video_stream(tmp_path):
    path = tmp_path / "sound.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\0\0" * 800)
    with pytest.raises(ZsclipError, match=r"sound.wav: has no video stream \(streams: audio\)"):
        probe(str(path))


def test_zero_length_video(tmp_path, shipped_shapes):
    import av

    path = tmp_path / "empty.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        container.start_encoding()
    with pytest.raises(ZsclipError, match=r"empty.mkv: .*(zero-length|no video stream|no frame)") as err:
        embed_video(shipped_shapes, str(path), fps=2, store=False)
    assert "\n" not in str(err.value)


def test_missing_file_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="nope.mp4: no such file"):
        probe(str(tmp_path / "nope.mp4"))


def test_missing_pyav_is_one_line_with_the_pip_command(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "av":
            raise ImportError("No module named 'av'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ZsclipError, match=r"pip install 'zsclip\[video\]'"):
        probe("anything.mp4")


def test_a_group_longer_than_any_before_does_not_make_seeking_loop(tmp_path):
    import threading

    import av

    # Keyframes at 0, 2 and 4 s, then none for 56 s: a seek toward 10 s lands back on the 4 s keyframe.
    path = tmp_path / "long_group.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width = stream.height = 16
        stream.pix_fmt = "yuv420p"
        stream.options = {"x264-params": "keyint=1000:min-keyint=1000:scenecut=0", "forced-idr": "1"}
        for i, rgb in enumerate(grey_ramp(600, (16, 16))):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            if i in (0, 20, 40):
                frame.pict_type = av.video.frame.PictureType.I
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    found = []
    reader = threading.Thread(target=lambda: found.extend(k for k, _ in FrameReader(str(path), 0.05, end=60.0)))
    reader.daemon = True
    reader.start()
    reader.join(timeout=60)
    assert not reader.is_alive(), "reading never finished"
    assert found == [0, 1, 2]
