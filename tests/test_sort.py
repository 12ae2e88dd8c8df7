"""zsclip.classify.sort: every mode, name collisions, unsafe labels, the dry run, and kill -9 in each crash window of a
move followed by --resume (no image lost, none twice)."""

import csv
import errno
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zsclip.classify import sort as S
from zsclip.classify.predict import Prediction, Skipped
from zsclip.classify.sort import MANIFEST, Sorter, check_sort_target, placing, safe_name
from zsclip.core.errors import UsageError, ZsclipError

REPO = Path(__file__).resolve().parents[1]


def pred(path, label, prob=0.9, abstained=False):
    return Prediction(str(path), label, prob, [{"label": label, "prob": prob}], abstained)


@pytest.fixture
def photos(tmp_path) -> Path:
    """Six files with distinct contents; two share a name in different folders."""
    root = tmp_path / "photos"
    (root / "b").mkdir(parents=True)
    for name in ("a.jpg", "c.png", "d.jpg", "b/a.jpg", "b/e.jpg", "b/f.jpg"):
        (root / name).write_bytes(f"pixels of {name}".encode() * 50)
    return root


def manifest(root: Path) -> list[dict]:
    with open(root / MANIFEST, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def contents(folder: Path) -> list[bytes]:
    """Every file's bytes under `folder`, manifest and hidden files left out."""
    return sorted(
        p.read_bytes() for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST and not p.name.startswith(".")
    )


def sort_all(photos: Path, out: Path, mode: str, **kw) -> Sorter:
    labels = {"a.jpg": "cat", "c.png": "dog", "d.jpg": "cat", "b/a.jpg": "cat", "b/e.jpg": "dog"}
    with Sorter(out, mode, **kw) as sorter:
        for rel, label in labels.items():
            sorter.add(pred(photos / rel, label))
        sorter.add(pred(photos / "b/f.jpg", "unknown", 0.2, abstained=True))
        sorter.add(Skipped(str(photos / "broken.jpg"), "cannot identify image file"))
    return sorter


@pytest.mark.parametrize("mode", ["copy", "link", "move"])
def test_each_mode_puts_every_image_in_its_label_folder(photos, tmp_path, mode):
    before = contents(photos)
    out = tmp_path / "sorted"
    sorter = sort_all(photos, out, mode)
    assert sorted(p.name for p in (out / "cat").iterdir()) == ["a.jpg", "a_1.jpg", "d.jpg"]
    assert sorted(p.name for p in (out / "dog").iterdir()) == ["c.png", "e.jpg"]
    assert [p.name for p in (out / "unknown").iterdir()] == ["f.jpg"]
    assert (out / "cat/a.jpg").read_bytes() == (b"pixels of a.jpg" * 50)
    assert (out / "cat/a_1.jpg").read_bytes() == (b"pixels of b/a.jpg" * 50)
    rows = manifest(out)
    assert [r["destination"] for r in rows] == ["cat/a.jpg", "dog/c.png", "cat/d.jpg", "cat/a_1.jpg", "dog/e.jpg",
                                                "unknown/f.jpg"]  # fmt: skip
    assert rows[-1]["abstained"] == "True" and rows[-1]["label"] == "unknown" and rows[-1]["prob"] == "0.200000"
    assert all(Path(r["source"]).is_absolute() for r in rows)
    assert sorter.counts == {"cat": 3, "dog": 2, "unknown": 1} and sorter.skipped == 1
    assert not list(out.rglob(".zsclip-*.tmp"))
    if mode == "move":
        assert contents(photos) == [] and contents(out) == before
    else:
        assert contents(photos) == before and contents(out) == before
    if mode == "link":
        assert all((out / r["destination"]).is_symlink() for r in rows)
        assert os.readlink(out / "cat/a_1.jpg") == str(photos / "b/a.jpg")
    else:
        assert not any((out / r["destination"]).is_symlink() for r in rows)


def test_never_overwrites_a_file_already_in_the_folder(photos, tmp_path):
    out = tmp_path / "sorted"
    (out / "cat").mkdir(parents=True)
    (out / "cat/a.jpg").write_bytes(b"mine")
    (out / "cat/a_1.jpg").write_bytes(b"mine too")
    with Sorter(out, "move") as sorter:
        dest = sorter.add(pred(photos / "a.jpg", "cat"))
    assert dest == out / "cat/a_2.jpg" and dest.read_bytes() == b"pixels of a.jpg" * 50
    assert (out / "cat/a.jpg").read_bytes() == b"mine" and (out / "cat/a_1.jpg").read_bytes() == b"mine too"


def test_a_name_taken_at_the_last_moment_is_not_overwritten(photos, tmp_path, monkeypatch):
    """Another writer takes the name between the check and the rename: the file gets the next name."""
    out = tmp_path / "sorted"
    real = placing.commit

    def racing(src, dest):
        if dest.name == "a.jpg":
            dest.write_bytes(b"someone else")
        return real(src, dest)

    monkeypatch.setattr(placing, "commit", racing)
    with Sorter(out, "copy") as sorter:
        assert sorter.add(pred(photos / "a.jpg", "cat")) == out / "cat/a_1.jpg"
    assert (out / "cat/a.jpg").read_bytes() == b"someone else"
    assert [r["destination"] for r in manifest(out)] == ["cat/a_1.jpg"]


def test_move_across_file_systems_copies_then_removes(photos, tmp_path, monkeypatch):
    """os.link / os.rename fail with EXDEV across file systems: a durable copy, then the source goes."""
    real_link = os.link

    def cross_device(src, dest, **kw):
        if "photos" in str(src):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real_link(src, dest, **kw)

    monkeypatch.setattr(os, "link", cross_device)
    before = contents(photos)
    sort_all(photos, tmp_path / "sorted", "move")
    assert contents(photos) == [] and contents(tmp_path / "sorted") == before


def test_move_to_a_real_other_file_system(photos, tmp_path):
    shm = Path("/dev/shm")
    if not shm.is_dir() or not os.access(shm, os.W_OK) or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("no second writable file system (/dev/shm)")
    out = shm / f"zsclip-sort-test-{os.getpid()}"
    try:
        before = contents(photos)
        sort_all(photos, out, "move")
        assert contents(photos) == [] and contents(out) == before
    finally:
        import shutil

        shutil.rmtree(out, ignore_errors=True)


def test_unsafe_labels_get_safe_distinct_folders_stated_in_the_manifest(photos, tmp_path):
    labels = ["a/b", "a_b", "..", ".", "CON", "nul.txt", "x" * 300, "x" * 300 + "y", "", "///", "Cat", "cat",
              ".hidden", "manifest.csv", "thumbs", "tab\there", "trailing. "]  # fmt: skip
    out = tmp_path / "sorted"
    with Sorter(out, "copy") as sorter:
        for i, label in enumerate(labels):
            src = photos / f"img{i}.jpg"
            src.write_bytes(bytes([i]))
            sorter.add(pred(src, label))
    rows = manifest(out)
    assert [r["label"] for r in rows] == labels
    folders = [r["folder"] for r in rows]
    assert len({f.casefold() for f in folders}) == len(labels), folders
    for row in rows:
        folder = row["folder"]
        assert (out / folder).parent == out and (out / folder).is_dir()
        assert (out / row["destination"]).parent == out / folder
        assert not folder.startswith(".") and "/" not in folder and len(folder.encode()) <= 100
        assert folder.split(".")[0].lower() not in {"con", "nul"}
    assert (out / MANIFEST).is_file()  # not replaced by a folder
    assert sorter.renamed()["a/b"] == "a_b" and sorter.renamed()["a_b"] == "a_b-2"
    assert sorter.folders["cat"] == "cat-2"  # case-insensitive file systems would merge Cat and cat


@given(st.text(max_size=300))
def test_safe_name_is_always_one_valid_path_component(label):
    name = safe_name(label)
    assert name and name not in (".", "..") and not name.startswith(".")
    assert not any(c in name for c in '/\\\0<>:"|?*') and not any(ord(c) < 32 for c in name)
    assert len(name.encode("utf-8", "surrogatepass")) <= 100
    assert name == name.rstrip(". ")
    assert name.split(".")[0].lower() not in S.plan._RESERVED


def test_labels_known_up_front_get_folders_in_class_order(photos, tmp_path):
    with Sorter(tmp_path / "sorted", "copy", labels=["a/b", "a_b"]) as sorter:
        sorter.add(pred(photos / "a.jpg", "a_b"))
    assert sorter.folders == {"a/b": "a_b", "a_b": "a_b-2"}
    assert (tmp_path / "sorted/a_b-2/a.jpg").exists()


def test_dry_run_prints_the_plan_and_touches_nothing(photos, tmp_path):
    before = contents(photos)
    out = tmp_path / "sorted"
    plan = io.StringIO()
    sorter = sort_all(photos, out, "move", dry_run=True, plan=plan)
    assert not out.exists() and contents(photos) == before
    rows = list(csv.DictReader(io.StringIO(plan.getvalue())))
    assert [r["destination"] for r in rows] == ["cat/a.jpg", "dog/c.png", "cat/d.jpg", "cat/a_1.jpg", "dog/e.jpg",
                                                "unknown/f.jpg"]  # fmt: skip
    assert sorter.counts["cat"] == 3


def test_an_earlier_sort_needs_resume_and_the_same_mode(photos, tmp_path):
    out = tmp_path / "sorted"
    sort_all(photos, out, "copy")
    with pytest.raises(UsageError, match="earlier sort; add --resume"):
        Sorter(out, "copy")
    with pytest.raises(UsageError, match="earlier sort"):
        check_sort_target(out, "copy", dry_run=True)
    with pytest.raises(UsageError, match=r"other mode \(mode 'copy'\)"):
        Sorter(out, "move", resume=True)
    with pytest.raises(UsageError, match="other threshold"):
        Sorter(out, "copy", resume=True, settings={"threshold": 0.5})


def test_resume_of_a_copy_adds_only_new_images(photos, tmp_path):
    out = tmp_path / "sorted"
    sort_all(photos, out, "copy")
    (photos / "new.jpg").write_bytes(b"new")
    with Sorter(out, "copy", resume=True) as sorter:
        assert sorter.resumed == 6 and str(photos / "b" / ".." / "a.jpg") in sorter.exclude
        os.chdir(photos)  # a resume from elsewhere still knows the images by their absolute paths
        assert "a.jpg" in sorter.exclude and "new.jpg" not in sorter.exclude
        assert sorter.add(pred(photos / "a.jpg", "cat")) is None
        assert sorter.add(pred(photos / "new.jpg", "dog")) == out / "dog/new.jpg"
    assert len(manifest(out)) == 7 and sorted(p.name for p in (out / "cat").iterdir()) == ["a.jpg", "a_1.jpg", "d.jpg"]


def test_a_source_gone_before_sorting_is_reported_not_recorded(photos, tmp_path):
    out = tmp_path / "sorted"
    with Sorter(out, "move") as sorter:
        (photos / "a.jpg").unlink()
        assert sorter.add(pred(photos / "a.jpg", "cat")) is None
        assert sorter.add(pred(photos / "d.jpg", "cat")) == out / "cat/d.jpg"
    assert sorter.missing == [str(photos / "a.jpg")]
    assert [r["destination"] for r in manifest(out)] == ["cat/d.jpg"]


def test_a_failed_copy_leaves_no_row_and_no_temporary_file(photos, tmp_path, monkeypatch):
    def full(src, dst):
        Path(dst).write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(placing.shutil, "copy2", full)
    out = tmp_path / "sorted"
    sorter = Sorter(out, "copy")
    with pytest.raises(ZsclipError, match="cannot copy .*a.jpg.*the disk is full"):
        sorter.add(pred(photos / "a.jpg", "cat"))
    sorter.close()
    assert manifest(out) == [] and list((out / "cat").iterdir()) == []


@pytest.mark.parametrize(
    "args, message",
    [
        (dict(mode="shuffle"), "--mode shuffle: use one of copy, link, move"),
        (dict(sources=[("PHOTOS", False)]), "is inside PHOTOS, which is being classified"),
        (dict(sources=[("PHOTOS/b", False)], target="PHOTOS/b"), "is inside PHOTOS/b, which"),
    ],
)
def test_check_sort_target_refuses_folders_that_overlap(photos, tmp_path, args, message):
    target = Path(str(args.pop("target", "PHOTOS/sorted")).replace("PHOTOS", str(photos)))
    args["sources"] = [(p.replace("PHOTOS", str(photos)), e) for p, e in args.get("sources", [])]
    with pytest.raises(UsageError, match=message.replace("PHOTOS", str(photos))):
        check_sort_target(target, **args)


def test_check_sort_target_overlap_rules(photos, tmp_path):
    # not recursive: a subfolder is not walked, so sorting into it is fine
    check_sort_target(photos / "sorted", sources=[(str(photos), False)], recursive=False)
    # a folder inside the target is refused: a move would shuffle the sorted tree
    with pytest.raises(UsageError, match="is inside --sort-into"):
        check_sort_target(tmp_path, sources=[(str(photos), False)])
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="is a file, not a folder"):
        check_sort_target(tmp_path / "file")


def test_resume_cuts_a_torn_last_row(photos, tmp_path):
    out = tmp_path / "sorted"
    sort_all(photos, out, "copy")
    with open(out / MANIFEST, "a", encoding="utf-8") as f:
        f.write(f'"{photos}/c.png",dog/c_1.png,do')
    with Sorter(out, "copy", resume=True) as sorter:
        assert sorter.resumed == 6
    assert len(manifest(out)) == 6 and (out / MANIFEST).read_bytes().endswith(b"\r\n")


# -- kill -9 during a move, then --resume ----------------------------------------------------------------------
SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, time, types
    from pathlib import Path
    from types import SimpleNamespace

    # zsclip/__init__ imports torch (seconds per process); the sorter needs none of it
    package = types.ModuleType("zsclip")
    package.__path__ = [os.path.join(os.environ["PYTHONPATH"], "zsclip")]
    sys.modules["zsclip"] = package
    from zsclip.classify import sort as S
    from zsclip.classify.sort import placing

    src, out, crash_point, crash_at, cross, slow, resume = sys.argv[1:]
    seen = {"n": 0}

    def hook(point):
        if slow != "0":
            time.sleep(float(slow))
        if point == crash_point:
            seen["n"] += 1
            if seen["n"] == int(crash_at):
                os.kill(os.getpid(), signal.SIGKILL)

    placing.hook = hook
    if cross == "1":  # every link/rename out of the sources fails as it does across file systems
        real_link, real_rename = os.link, os.rename
        def exdev(real):
            def call(a, b, **kw):
                if str(a).startswith(src):
                    raise OSError(18, "Invalid cross-device link")
                return real(a, b, **kw)
            return call
        os.link, os.rename = exdev(real_link), exdev(real_rename)
    sorter = S.Sorter(out, "move", resume=resume == "1")
    # what classify would yield: the images still in the source folder, in walk order, less those sorted
    for i, path in enumerate(sorted(Path(src).rglob("*.jpg"))):
        if str(path) not in sorter.exclude:
            label = ["cat", "dog", "bird"][int(path.stem[3:]) % 3]
            sorter.add(SimpleNamespace(path=str(path), label=label, prob=0.5, abstained=False))
            print("added", path, flush=True)
    sorter.close()
    """
)


def run_script(tmp_path, src, out, point="none", at=0, cross=False, slow=0.0, resume=False, wait=True):
    script = tmp_path / "sort_script.py"
    script.write_text(SCRIPT)
    args = [sys.executable, str(script), str(src), str(out), point, str(at), str(int(cross)), str(slow),
            str(int(resume))]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if not wait:
        return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)


def make_images(root: Path, n: int) -> list[bytes]:
    (root / "sub").mkdir(parents=True)
    for i in range(n):
        (root / ("sub" if i % 2 else "") / f"img{i:03d}.jpg").write_bytes(f"image {i} ".encode() * (200 + i))
    return contents(root)


def assert_each_image_once(src: Path, out: Path, before: list[bytes]) -> None:
    rows = manifest(out)
    assert contents(src) == [], "a source was left behind"
    assert contents(out) == before, "an image was lost or sorted twice"
    assert sorted((out / r["destination"]).read_bytes() for r in rows) == before, "the manifest misses an image"
    assert len({r["source"] for r in rows}) == len(rows) == len(before)
    assert not list(out.rglob(".zsclip-*.tmp"))


@pytest.fixture
def other_fs(tmp_path):
    """A folder on a second file system (the tmpfs /dev/shm), where a move is a copy + fsync + unlink for real."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or not os.access(shm, os.W_OK) or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("no second writable file system (/dev/shm)")
    folder = shm / f"zsclip-test-{os.getpid()}-{time.monotonic_ns()}"
    folder.mkdir()
    yield folder
    import shutil

    shutil.rmtree(folder, ignore_errors=True)


WINDOWS = [(point, where) for where in ("same-fs", "simulated", "tmpfs") for point in ("row", "copied", "placed")
           if not (point == "copied" and where == "same-fs")]  # a rename has no copy step  # fmt: skip


@pytest.mark.parametrize(("point", "where"), WINDOWS, ids=[f"{p}-{w}" for p, w in WINDOWS])
def test_kill_9_in_each_window_of_a_move_then_resume(tmp_path, request, point, where):
    """`simulated`: link and rename fail with EXDEV as across file systems; `tmpfs`: the sort folder is on
    /dev/shm, a second file system for real."""
    cross = where == "simulated"
    src = tmp_path / "src"
    out = (request.getfixturevalue("other_fs") if where == "tmpfs" else tmp_path) / "sorted"
    before = make_images(src, 9)
    killed = run_script(tmp_path, src, out, point, at=4, cross=cross)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert killed.stdout.count("added") == 3
    if point == "copied":  # killed inside the copy window: a whole temporary copy, the source still there
        assert len(contents(src)) == 6 and list(out.rglob(".zsclip-*.tmp"))
    again = run_script(tmp_path, src, out, cross=cross)
    assert again.returncode != 0 and "UsageError" in again.stderr and "add --resume" in again.stderr  # refused
    resumed = run_script(tmp_path, src, out, cross=cross, resume=True)
    assert resumed.returncode == 0, resumed.stderr
    assert_each_image_once(src, out, before)


@pytest.mark.parametrize("cross", [False, True], ids=["same-fs", "cross-fs"])
def test_kill_9_from_outside_at_a_random_moment_of_a_slow_move(tmp_path, cross):
    src, out = tmp_path / "src", tmp_path / "sorted"
    before = make_images(src, 30)
    for round_ in range(3):
        proc = run_script(tmp_path, src, out, slow=0.01, cross=cross, resume=round_ > 0, wait=False)
        deadline = time.monotonic() + 60
        while not (out / MANIFEST).exists() or len(manifest(out)) < 4 * (round_ + 1):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.005)
        time.sleep(0.013 * (round_ + 1))  # somewhere inside the steps of the next image
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    resumed = run_script(tmp_path, src, out, cross=cross, resume=True)
    assert resumed.returncode == 0, resumed.stderr
    assert_each_image_once(src, out, before)


def test_resume_settles_the_unfinished_row(tmp_path):
    """The four states of the last row, set up by hand."""
    src, out = tmp_path / "src", tmp_path / "sorted"
    before = make_images(src, 3)
    files = sorted(src.rglob("*.jpg"))
    with Sorter(out, "move") as sorter:
        sorter.add(SimpleNamespace(path=str(files[0]), label="cat", prob=0.5, abstained=False))
    # a copy that finished but whose source was not removed yet
    (out / "cat" / files[1].name).write_bytes(files[1].read_bytes())
    with open(out / MANIFEST, "a", newline="", encoding="utf-8") as f:
        csv.writer(f).writerow([str(files[1]), f"cat/{files[1].name}", "cat", "cat", "0.5", False])
    with Sorter(out, "move", resume=True) as sorter:
        assert sorter.resumed == 2 and not files[1].exists()
    # a row written, nothing moved yet: dropped, the image sorted again
    with open(out / MANIFEST, "a", newline="", encoding="utf-8") as f:
        csv.writer(f).writerow([str(files[2]), f"dog/{files[2].name}", "dog", "dog", "0.5", False])
    (out / "dog").mkdir()
    (out / "dog" / ".zsclip-0123456789ab.tmp").write_bytes(b"half a copy")
    with Sorter(out, "move", resume=True) as sorter:
        assert sorter.resumed == 2 and str(files[2]) not in sorter.exclude
        sorter.add(SimpleNamespace(path=str(files[2]), label="dog", prob=0.5, abstained=False))
    assert_each_image_once(src, out, before)


def test_summary_says_what_went_where(photos, tmp_path):
    out = tmp_path / "sorted"
    with Sorter(out, "copy", labels=["cat", "dog/puppy"]) as sorter:
        sorter.add(pred(photos / "a.jpg", "cat"))
        sorter.add(pred(photos / "c.png", "dog/puppy"))
        sorter.add(pred(photos / "d.jpg", "cat"))
    assert sorter.summary() == [
        f"sorted 3 images into {out} (copy): cat 2, dog/puppy 1",
        "label 'dog/puppy' is in folder dog_puppy",
    ]


def test_file_names_with_line_breaks_survive_a_resume(photos, tmp_path):
    odd = photos / "we\nird\u2028name\r.jpg"
    odd.write_bytes(b"odd")
    out = tmp_path / "sorted"
    with Sorter(out, "move") as sorter:
        sorter.add(pred(odd, "cat"))
        sorter.add(pred(photos / "a.jpg", "cat"))
    with Sorter(out, "move", resume=True) as sorter:
        assert sorter.resumed == 2 and str(odd) in sorter.exclude
    assert (out / "cat" / odd.name).read_bytes() == b"odd" and manifest(out)[0]["source"] == str(odd)


def test_the_sink_modules_import_neither_torch_nor_matplotlib():
    code = (
        "import os, sys, types; pkg = types.ModuleType('zsclip'); pkg.__path__ = [os.path.join(sys.argv[1], 'zsclip')];"
        "sys.modules['zsclip'] = pkg; import zsclip.classify.sort, zsclip.classify.gallery;"
        "print(sorted(m for m in ('torch', 'matplotlib', 'open_clip', 'pandas') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(REPO)], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_resume_of_a_move_redoes_any_row_whose_rename_was_lost(tmp_path):
    """A power cut can lose renames older than the last row: such a row (destination missing, source there) goes."""
    src, out = tmp_path / "src", tmp_path / "sorted"
    before = make_images(src, 3)
    files = sorted(src.rglob("*.jpg"))
    with Sorter(out, "move") as sorter:
        for f in files[:2]:
            sorter.add(SimpleNamespace(path=str(f), label="cat", prob=0.5, abstained=False))
    (out / "cat" / files[0].name).rename(files[0])  # the first rename never reached the disk
    with Sorter(out, "move", resume=True) as sorter:
        assert sorter.resumed == 1 and str(files[0]) not in sorter.exclude
        for f in (files[0], files[2]):
            sorter.add(SimpleNamespace(path=str(f), label="cat", prob=0.5, abstained=False))
    assert_each_image_once(src, out, before)


# -- issue 21: identity, not size or path --------------------------------------------------------------------
def bmp(path: Path, colour) -> Path:
    """120x90 BMP scans: every one has the same byte size, whatever it shows."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (120, 90), colour).save(path, "BMP")
    return path


def test_resume_of_a_finished_move_never_deletes_a_new_file_of_the_same_size(tmp_path):
    """Item 1: the new scan at the last row's source path was taken for an unfinished move and deleted."""
    inbox, out = tmp_path / "inbox", tmp_path / "sorted"
    scans = [bmp(inbox / f"scan{i}.bmp", (60 * i, 10, 10)) for i in range(3)]
    with Sorter(out, "move") as sorter:
        for scan in scans:
            sorter.add(pred(scan, "scan"))
    new = bmp(inbox / "scan2.bmp", (1, 200, 1)).read_bytes()
    assert len(new) == (out / "scan" / "scan2.bmp").stat().st_size
    with Sorter(out, "move", resume=True) as sorter:
        assert str(inbox / "scan2.bmp") not in sorter.exclude  # a new image, to be sorted
        sorter.add(pred(inbox / "scan2.bmp", "scan"))
    assert (out / "scan" / "scan2_1.bmp").read_bytes() == new
    assert len(contents(out)) == 4 and not list(inbox.iterdir())


def test_resume_sorts_a_new_image_that_arrived_at_a_path_sorted_before(tmp_path):
    """Item 3: every manifest source was excluded by path, so a new image there was never sorted."""
    inbox, out = tmp_path / "inbox", tmp_path / "sorted"
    first = bmp(inbox / "a.bmp", (200, 0, 0))
    bmp(inbox / "b.bmp", (0, 200, 0))
    with Sorter(out, "move") as sorter:
        sorter.add(pred(first, "red"))
        sorter.add(pred(inbox / "b.bmp", "green"))
    bmp(first, (0, 0, 200))  # a new photo saved under the old name
    with Sorter(out, "move", resume=True) as sorter:
        assert str(first) not in sorter.exclude
        assert sorter.add(pred(first, "blue")) == out / "blue" / "a.bmp"
    assert not first.exists() and len(contents(out)) == 3


def test_resume_of_a_copy_sorts_again_an_image_whose_content_changed(photos, tmp_path):
    out = tmp_path / "sorted"
    with Sorter(out, "copy") as sorter:
        sorter.add(pred(photos / "a.jpg", "cat"))
        sorter.add(pred(photos / "c.png", "dog"))
    os.utime(photos / "c.png")  # metadata alone: the same image
    (photos / "a.jpg").write_bytes(b"an edited photo")
    with Sorter(out, "copy", resume=True) as sorter:
        assert str(photos / "c.png") in sorter.exclude
        assert str(photos / "a.jpg") not in sorter.exclude
        sorter.add(pred(photos / "a.jpg", "dog"))
    assert (out / "dog" / "a.jpg").read_bytes() == b"an edited photo"


def test_a_taken_back_row_leaves_no_hole_in_the_manifest(photos, tmp_path, monkeypatch):
    """Item 2: truncate without a seek left the next row after a run of NUL bytes; its source then read as
    NULs + path, and a resume sorted the image again."""
    out = tmp_path / "sorted"
    real = placing.shutil.copy2

    def vanish_once(src, dst, *a, **k):
        if src.endswith("c.png") and not vanish_once.done:  # removed by someone else mid-copy
            vanish_once.done = True
            os.unlink(src)
            raise FileNotFoundError(errno.ENOENT, "gone", src)
        return real(src, dst, *a, **k)

    vanish_once.done = False
    monkeypatch.setattr(placing.shutil, "copy2", vanish_once)
    with Sorter(out, "copy") as sorter:
        sorter.add(pred(photos / "a.jpg", "cat"))
        sorter.add(pred(photos / "c.png", "dog"))  # placement fails: the row is taken back, the sort goes on
        sorter.add(pred(photos / "d.jpg", "cat"))
    assert b"\0" not in (out / MANIFEST).read_bytes()
    assert [r["source"] for r in manifest(out)] == [str(photos / "a.jpg"), str(photos / "d.jpg")]
    with Sorter(out, "copy", resume=True) as sorter:
        assert sorter.add(pred(photos / "d.jpg", "cat")) is None  # sorted before: not again
    assert sorted(p.name for p in (out / "cat").iterdir()) == ["a.jpg", "d.jpg"]


def test_a_second_sort_into_the_same_folder_is_refused(photos, tmp_path):
    """Item 17: two sorts on one manifest; the loser called the winner's moves 'gone'."""
    out = tmp_path / "sorted"
    with Sorter(out, "move") as first:
        first.add(pred(photos / "a.jpg", "cat"))
        with pytest.raises(UsageError, match=rf"--sort-into {out} is in use by another zsclip process \(pid "):
            Sorter(out, "move", resume=True)
    with Sorter(out, "move", resume=True) as again:  # released on close
        assert again.resumed == 1


def test_the_lock_of_a_killed_sort_is_taken_over(photos, tmp_path):
    out = tmp_path / "sorted"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT);"
         "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)", str(out / S.LOCK)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(UsageError, match="in use by another zsclip process"):
        Sorter(out, "copy")
    holder.kill()
    holder.wait()
    with Sorter(out, "copy") as sorter:
        sorter.add(pred(photos / "a.jpg", "cat"))
    assert (out / "cat" / "a.jpg").exists()


def test_a_relative_symlink_moved_to_its_label_folder_still_points_to_its_image(tmp_path):
    """Item 18: the link was carried to a new depth and dangled, and the manifest called it placed."""
    inbox, out = tmp_path / "inbox", tmp_path / "sorted"
    (tmp_path / "archive").mkdir()
    target = bmp(tmp_path / "archive" / "real.bmp", (9, 9, 9))
    link = inbox / "deep" / "deeper" / "link.bmp"
    link.parent.mkdir(parents=True)
    link.symlink_to(os.path.relpath(target, link.parent))
    with Sorter(out, "move") as sorter:
        placed = sorter.add(pred(link, "grey"))
    assert placed.is_symlink() and placed.read_bytes() == target.read_bytes()
    assert not os.path.lexists(link) and target.exists()


def test_a_manifest_from_before_identities_resumes(photos, tmp_path):
    """Rows of six columns (zsclip before issue 21) are read, and the manifest gains the new columns."""
    out = tmp_path / "sorted"
    (out / "cat").mkdir(parents=True)
    (out / "cat" / "a.jpg").write_bytes((photos / "a.jpg").read_bytes())
    (out / MANIFEST).write_text(f"{','.join(S.OLD_COLUMNS)}\n{photos / 'a.jpg'},cat/a.jpg,cat,cat,0.9,False\n")
    (out / S.STATE).write_text(json.dumps({"mode": "copy"}))
    with Sorter(out, "copy", resume=True) as sorter:
        assert str(photos / "a.jpg") in sorter.exclude and sorter.resumed == 1
        sorter.add(pred(photos / "c.png", "dog"))
    rows = manifest(out)
    assert list(rows[0]) == S.COLUMNS and rows[0]["content_hash"] == "" and len(rows[1]["content_hash"]) == 32


@pytest.mark.parametrize("via", ["folder", "list"])
def test_a_move_never_takes_files_from_a_folder_linked_in_from_outside(tmp_path, via, monkeypatch):
    """Issue 31: `classify inbox/ --sort-into DIR --mode move` followed inbox/linked -> extra/linked and emptied
    extra/linked, a folder the user never named (the same through an @list naming inbox with a relative link).
    The linked files stay, and stderr says so; --follow-links moves them too."""
    import shutil

    from typer.testing import CliRunner

    from zsclip.cli import app

    examples = Path(__file__).resolve().parents[1] / "examples" / "shapes"
    inbox, extra = tmp_path / "inbox", tmp_path / "extra" / "linked"
    inbox.mkdir()
    extra.parent.mkdir()
    shutil.copy(examples / "red_circle.png", inbox)
    shutil.copytree(examples, extra)
    (inbox / "linked").symlink_to(os.path.relpath(extra, inbox))
    listing = tmp_path / "list.txt"
    listing.write_text("inbox\n")
    monkeypatch.chdir(tmp_path)
    source = "@list.txt" if via == "list" else str(inbox)
    args = ["classify", source, "-m", "shapes", "-c", "red circle,blue cross", "--sort-into", str(tmp_path / "out")]
    result = CliRunner().invoke(app, [*args, "--mode", "move", "-f", "jsonl"])
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in extra.iterdir()) == sorted(p.name for p in examples.iterdir())  # all still there
    assert not (inbox / "red_circle.png").exists()  # the inbox's own file was moved
    assert "left 12 files where they are" in result.stderr and "--follow-links" in result.stderr
    again = CliRunner().invoke(app, [*args, "--mode", "move", "-f", "jsonl", "--follow-links", "--resume"])
    assert again.exit_code == 0, again.stderr
    assert not list(extra.iterdir())  # asked for: moved


@pytest.mark.parametrize("via", ["path", "list"])
def test_a_dotdot_after_a_symlink_moves_the_file_that_was_classified(tmp_path, via, monkeypatch):
    """`inbox/linkout/..` is where the OS goes through the link (outside/..), not `inbox`: the image read there
    was classified, and abspath() made the move take inbox/o3.png instead, under the other image's label."""
    import shutil

    from typer.testing import CliRunner

    from zsclip.cli import app

    examples = Path(__file__).resolve().parents[1] / "examples" / "shapes"
    (tmp_path / "inbox").mkdir()
    (tmp_path / "outside").mkdir()
    shutil.copy(examples / "red_circle.png", tmp_path / "inbox" / "o3.png")
    shutil.copy(examples / "blue_square.png", tmp_path / "o3.png")
    (tmp_path / "inbox" / "linkout").symlink_to("../outside")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "list.txt").write_text("inbox/linkout/../o3.png\n")
    source = ["@list.txt"] if via == "list" else ["inbox/linkout/..", "--no-recursive"]
    args = [*source, "-m", "shapes", "-c", "red circle,blue square,green star", "-t", "shapes"]
    result = CliRunner().invoke(app, ["classify", *args, "--sort-into", "sorted", "--mode", "move", "-f", "jsonl"])
    assert result.exit_code == 0, result.stderr
    moved = tmp_path / "sorted" / "blue square" / "o3.png"
    assert moved.read_bytes() == (examples / "blue_square.png").read_bytes()  # the classified image, its label
    assert (tmp_path / "inbox" / "o3.png").read_bytes() == (examples / "red_circle.png").read_bytes()  # untouched
