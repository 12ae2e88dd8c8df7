"""The Ray engine against the local engine on the same input: same records, skips, reasons and metrics; a
killed worker is retried; the image store is shared. One local Ray cluster (2 CPUs) serves the whole module."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zsclip.classify.predict import classify
from zsclip.core.errors import UsageError
from zsclip.engines import ReadOptions, Runtime, check_engine
from zsclip.engines.ray import RayOptions, require_ray
from zsclip.models import load_model
from zsclip.zeroshot.classifier import build_classifier

CLASSES = ["cat", "dog", "car", "tree"]


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def clip(tiny_model_dir):
    return load_model(str(tiny_model_dir), device="cpu")


@pytest.fixture
def clf(clip):
    return build_classifier(clip, CLASSES, ["a photo of a {}.", "a {}."])


def make_folder(root: Path, n: int = 24, odd_name: bool = True) -> Path:
    """Images in two folders and the kinds of bad file a real folder holds."""
    (root / "sub").mkdir(parents=True)
    for i in range(n):
        rng = np.random.RandomState(i)
        img = Image.fromarray((rng.rand(48 + i, 64, 3) * 255).astype("uint8"))
        img.save(root / f"{i:02d}.jpg") if i % 3 else img.save(root / "sub" / f"{i:02d}.png")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    (root / "empty.png").write_bytes(b"")
    (root / "notes.txt").write_text("not an image, ignored silently")
    if odd_name:  # a name that is not UTF-8 (Latin-1 é), as old archives hold
        Image.new("RGB", (30, 30), (9, 9, 9)).save(os.fsdecode(bytes(root / "sub") + b"/caf\xe9.png"), "PNG")
    return root


def records(clip, clf, paths, **options) -> list[dict]:
    return [r.to_dict() for r in classify(clip, clf, paths, top_k=3, **options)]


def assert_same(local: list[dict], remote: list[dict]) -> None:
    assert [r["path"] for r in remote] == [r["path"] for r in local]
    for a, b in zip(local, remote, strict=True):
        assert a.get("reason") == b.get("reason"), a["path"]
        if "label" in a:
            assert b["label"] == a["label"]
            assert [t["label"] for t in b["top_k"]] == [t["label"] for t in a["top_k"]]
            assert b["prob"] == pytest.approx(a["prob"], abs=1e-5)


def test_unknown_engine_is_a_usage_error():
    with pytest.raises(UsageError, match="--engine gpu: use one of local, ray"):
        check_engine("gpu")


def test_without_ray_the_error_names_the_pip_command(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(UsageError, match=r'pip install "zsclip\[ray\]"'):
        require_ray()


def test_bad_actor_options_are_usage_errors():
    with pytest.raises(UsageError, match="--actors 0"):
        RayOptions(actors=0).check()
    with pytest.raises(UsageError, match="--gpus-per-actor -1"):
        RayOptions(gpus_per_actor=-1).check()


@pytest.mark.slow
def test_same_records_skips_and_reasons_as_local(ray_cluster, clip, clf, tmp_path):
    folder = make_folder(tmp_path / "imgs")
    limit = 64 * 60  # images are 64 x (48 + i) pixels: those from i = 13 on are over --max-pixels
    local = records(clip, clf, folder, store=False, batch_size=5, max_pixels=limit, workers=0)
    remote = records(clip, clf, folder, store=False, batch_size=5, max_pixels=limit, runtime=Runtime("ray"))
    assert_same(local, remote)
    reasons = {Path(r["path"]).name: r["reason"] for r in remote if "reason" in r}
    assert {"broken.jpg", "empty.png", "13.jpg", "23.jpg"} <= set(reasons)
    assert "max-pixels" in reasons["13.jpg"]
    assert sum("label" in r for r in remote) == 14  # with the file whose name is not UTF-8


@pytest.mark.slow
def test_exclude_and_shard_leave_out_the_same_files(ray_cluster, clip, clf, tmp_path):
    """What --resume (exclude) and --shard pass: the Ray engine leaves out exactly what the local engine does."""
    folder = make_folder(tmp_path / "imgs", n=10)
    done = {str(folder / "01.jpg"), str(folder / "broken.jpg")}
    local = records(clip, clf, folder, store=False, workers=0, exclude=done, shard=(1, 2))
    remote = records(clip, clf, folder, store=False, runtime=Runtime("ray"), exclude=done, shard=(1, 2))
    assert_same(local, remote)
    assert not done & {r["path"] for r in remote}
    assert 0 < len(remote) < 10


@pytest.mark.slow
def test_object_store_uris_read_through_pyarrow(ray_cluster, clip, clf, tmp_path):
    """file:// goes through the same pyarrow file-system reader as s3://, gs:// and abfs://."""
    folder = make_folder(tmp_path / "imgs", n=6, odd_name=False)  # object-store keys are UTF-8
    local = records(clip, clf, folder, store=False, workers=0)
    remote = records(clip, clf, f"file://{folder}", store=False, runtime=Runtime("ray"))
    for r in remote:
        assert r["path"].startswith("file://")
        r["path"] = r["path"][len("file://") :]
    assert_same(local, remote)


def test_the_local_engine_refuses_uris(clip, clf):
    with pytest.raises(UsageError, match="--engine ray"):
        records(clip, clf, "s3://bucket/photos/a.jpg", store=False)


@pytest.mark.slow
def test_store_is_shared_with_the_local_engine_and_a_rerun_encodes_nothing(ray_cluster, clip, clf, tmp_path):
    from zsclip.engines import embed_stream
    from zsclip.pipeline.sources import expand_sources

    folder = make_folder(tmp_path / "imgs", n=8)
    sources = expand_sources([folder])
    first = list(embed_stream(clip, sources, ReadOptions(batch_size=4), Runtime("ray")))
    assert sum(b.reused for b in first) == 0
    again = list(embed_stream(clip, sources, ReadOptions(batch_size=4), Runtime("ray")))
    assert sum(b.reused for b in again) == 8  # every vector from the store: Ray was given nothing to encode
    local = list(embed_stream(clip, sources, ReadOptions(batch_size=4)))
    assert sum(b.reused for b in local) == 8  # the Ray engine's vectors are keyed as the local engine's
    fresh = list(embed_stream(clip, sources, ReadOptions(store=False, batch_size=4)))
    np.testing.assert_allclose(
        np.concatenate([b.features for b in again if b.features is not None]),
        np.concatenate([b.features for b in fresh if b.features is not None]),
        atol=1e-5,
    )


@pytest.mark.slow
def test_eval_metrics_are_the_same(ray_cluster, clip, tmp_path):
    from zsclip.datasets import EvalDataset
    from zsclip.evaluate.run import evaluate

    folder = make_folder(tmp_path / "imgs", n=12)
    files = sorted(p for p in folder.rglob("*.*") if p.suffix in (".jpg", ".png"))
    dataset = EvalDataset("mini", CLASSES, [(str(p), i % len(CLASSES)) for i, p in enumerate(files)])
    templates = ["a photo of a {}."]
    local = evaluate(clip, dataset, templates, store=False, workers=0)
    remote = evaluate(clip, dataset, templates, store=False, runtime=Runtime("ray"))
    assert remote.metrics == pytest.approx(local.metrics, abs=1e-9)
    assert remote.skipped == local.skipped
    assert remote.paths == local.paths


class KillOnce:
    """A preprocessing that SIGKILLs the Ray worker process running it, once per test (marker file), mid-run."""

    def __init__(self, preprocess, marker: str, after: int = 2) -> None:
        self.preprocess, self.marker, self.after, self.calls = preprocess, marker, after, 0

    def __getattr__(self, name: str):  # everything else (sizes, the cache key) is the wrapped preprocessing's
        if name == "preprocess":
            raise AttributeError(name)
        return getattr(self.preprocess, name)

    def geometry(self, image):
        self.calls += 1
        if self.calls > self.after:
            try:
                os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                pass
            else:
                os.kill(os.getpid(), signal.SIGKILL)
        return self.preprocess.geometry(image)


@pytest.mark.slow
def test_a_killed_worker_is_retried_and_every_record_appears_once(ray_cluster, clip, clf, tmp_path, monkeypatch):
    folder = make_folder(tmp_path / "imgs", n=20)
    local = records(clip, clf, folder, store=False, batch_size=4, workers=0)
    marker = tmp_path / "killed"
    monkeypatch.setattr(clip, "preprocess", KillOnce(clip.preprocess, str(marker)))
    remote = records(clip, clf, folder, store=False, batch_size=4, runtime=Runtime("ray"))
    assert marker.exists()  # a worker really died mid-run
    assert_same(local, remote)
    assert len({r["path"] for r in remote}) == len(remote)


@pytest.mark.slow
def test_a_file_replaced_with_its_old_size_and_mtime_is_encoded_again(ray_cluster, clip, tmp_path):
    """Issue 21 item 5: the driver's store lookup used (path, size, mtime) only and served the old vector."""
    from zsclip.engines import embed_stream
    from zsclip.pipeline.sources import expand_sources

    folder = tmp_path / "imgs"
    folder.mkdir()
    path = folder / "scan.bmp"
    Image.new("RGB", (40, 30), (250, 0, 0)).save(path)  # a BMP's size depends on its dimensions alone
    sources = expand_sources([folder])
    before = next(b for b in embed_stream(clip, sources, runtime=Runtime("ray")) if b.features is not None).features
    st = path.stat()
    Image.new("RGB", (40, 30), (0, 0, 250)).save(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns
    again = next(b for b in embed_stream(clip, sources, runtime=Runtime("ray")) if b.features is not None)
    fresh = next(b for b in embed_stream(clip, sources, ReadOptions(store=False, workers=0)) if b.features is not None)
    assert again.reused == 0
    np.testing.assert_allclose(again.features, fresh.features, atol=1e-5)
    assert not np.allclose(before, fresh.features, atol=1e-3)
    local = next(b for b in embed_stream(clip, sources, ReadOptions(workers=0)) if b.features is not None)
    assert local.reused == 1  # what the Ray run stored is keyed by the full identity, as the local engine's
