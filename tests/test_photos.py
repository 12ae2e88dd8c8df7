"""The photo library: duplicates in two tiers (records, page, --move-into with its manifest), keywords in XMP
sidecars read back with exiftool (the reference reader), search by when / camera / GPS on generated EXIF, and the
formats phones and cameras write (HEIC made with pillow-heif, MPO, RAW beside its JPEG, a missing extra)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from zsclip.cli import app

runner = CliRunner()
SHAPES = ["-m", "shapes", "-t", "shapes"]
CLASSES = "red circle,blue cross,green square"
EXIFTOOL = shutil.which("exiftool")
needs_exiftool = pytest.mark.skipif(
    EXIFTOOL is None and not os.environ.get("CI_REQUIRE_EXIFTOOL"),
    reason="exiftool is not installed (apt-get install libimage-exiftool-perl)",
)
pytest.importorskip("imagehash", reason="the photos extra is not installed")


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def picture(seed: int, size=(320, 240)) -> Image.Image:
    """A photo-like picture: smooth shapes of colour, different for every seed."""
    rng = np.random.default_rng(seed)
    low = rng.integers(0, 255, size=(6, 8, 3)).astype(np.uint8)
    im = Image.fromarray(low).resize(size, Image.BICUBIC)
    noise = rng.normal(0, 6, size=(size[1], size[0], 3))
    return Image.fromarray(np.clip(np.asarray(im, dtype=float) + noise, 0, 255).astype(np.uint8))


def exif_bytes(taken: str | None = None, make: str | None = None, model: str | None = None, gps: bool = False):
    exif = Image.Exif()
    if make:
        exif[0x010F] = make
    if model:
        exif[0x0110] = model
    if taken:
        exif.get_ifd(0x8769)[0x9003] = taken
    if gps:
        exif.get_ifd(0x8825).update({1: "N", 2: (48.0, 51.0, 24.0), 3: "E", 4: (2.0, 21.0, 3.0)})
    return exif.tobytes()


def library(root: Path) -> dict[str, Path]:
    """Originals, an exact copy, near duplicates of one original, and unrelated photos; mtimes in order."""
    root.mkdir(parents=True, exist_ok=True)
    a = picture(1, (400, 300))
    files = {
        "a": root / "a.jpg",
        "a_copy": root / "backup" / "a.jpg",
        "a_small": root / "a_small.jpg",
        "a_q30": root / "a_q30.jpg",
        "a_crop": root / "a_crop.png",
        "b": root / "b.jpg",
        "c": root / "c.png",
    }
    files["a_copy"].parent.mkdir(exist_ok=True)
    a.save(files["a"], quality=92)
    shutil.copy(files["a"], files["a_copy"])
    a.resize((200, 150), Image.LANCZOS).save(files["a_small"], quality=90)
    a.save(files["a_q30"], quality=30)
    a.crop((16, 12, 384, 288)).save(files["a_crop"])
    picture(2).save(files["b"], quality=90)
    picture(3).save(files["c"])
    for i, path in enumerate(files.values()):  # a is the oldest
        os.utime(path, ns=(1_600_000_000_000_000_000 + i * 10**9,) * 2)
    return files


# -- duplicates ------------------------------------------------------------------------------------------------
def test_dupes_finds_exact_copies_and_near_duplicates_and_keeps_the_original(tmp_path):
    files = library(tmp_path / "photos")
    result = run("dupes", tmp_path / "photos", "-f", "json")
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout)
    groups: dict[int, list[dict]] = {}
    for r in records:
        groups.setdefault(r["group"], []).append(r)
    exact = [g for g in groups.values() if g[0]["tier"] == "exact"]
    near = [g for g in groups.values() if g[0]["tier"] == "near"]
    assert [{r["path"] for r in g} for g in exact] == [{str(files["a"]), str(files["a_copy"])}]
    assert [r["path"] for r in exact[0] if r["keep"]] == [str(files["a"])]  # the oldest copy
    assert len(near) == 1
    assert {r["path"] for r in near[0]} == {str(files[k]) for k in ("a", "a_small", "a_q30", "a_crop")}
    kept = [r for r in near[0] if r["keep"]]
    assert [r["path"] for r in kept] == [str(files["a"])] and "most pixels" in kept[0]["why"]
    assert str(files["b"]) not in {r["path"] for r in records} and str(files["c"]) not in {r["path"] for r in records}
    small = next(r for r in records if r["path"] == str(files["a_small"]))
    assert (small["width"], small["height"], small["pixels"]) == (200, 150, 30000)
    assert small["size"] == files["a_small"].stat().st_size


def test_dupes_near_tier_agrees_with_imagededups_phash_at_the_same_threshold(tmp_path):
    """The reference: imagededup's PHash finds the resized and recompressed copies; zsclip finds those and more."""
    imagededup = pytest.importorskip("imagededup.methods")
    files = library(tmp_path / "photos")
    theirs = imagededup.PHash(verbose=False).find_duplicates(
        image_dir=str(tmp_path / "photos"), max_distance_threshold=10
    )
    result = run("dupes", tmp_path / "photos", "-f", "jsonl", "--no-recursive")
    ours = {json.loads(line)["path"] for line in result.stdout.splitlines()}
    found_by_them = {str(tmp_path / "photos" / f) for f, dupes in theirs.items() if dupes}
    assert found_by_them and found_by_them <= ours
    assert str(files["b"]) not in ours


def test_dupes_writes_csv_a_page_and_moves_all_but_the_kept_file_with_a_manifest(tmp_path):
    files = library(tmp_path / "photos")
    before = sorted(p.read_bytes() for p in (tmp_path / "photos").rglob("*") if p.is_file())
    out, page, moved = tmp_path / "dupes.csv", tmp_path / "page", tmp_path / "moved"
    result = run("dupes", tmp_path / "photos", "-o", out, "--report", page, "--move-into", moved)
    assert result.exit_code == 0, result.output
    header = out.read_text().splitlines()[0].split(",")
    assert header == ["group", "tier", "path", "size", "pixels", "width", "height", "keep", "why"]
    html = (page / "dupes.html").read_text()
    assert html.count("<section") == 2 and "keep" in html and len(list((page / "thumbs").glob("*.webp"))) >= 5
    assert files["a"].exists() and files["b"].exists() and files["c"].exists()  # kept and unrelated stay
    placed = sorted(p.relative_to(moved).as_posix() for p in moved.rglob("*") if p.is_file() and p.parent != moved)
    assert [p.split("/")[1] for p in placed] == ["a.jpg", "a_crop.png", "a_q30.jpg", "a_small.jpg"]
    assert placed[0].startswith("exact-") and all(p.startswith("near-") for p in placed[1:])
    after = sorted(p.read_bytes() for p in [*(tmp_path / "photos").rglob("*"), *moved.rglob("*")] if p.is_file())
    assert [b for b in before if b not in after] == []  # nothing deleted
    manifest = (moved / "manifest.csv").read_text()
    assert str(files["a_copy"]) in manifest and str(files["a_small"]) in manifest
    again = run("dupes", tmp_path / "photos", "--move-into", moved, "--resume", "-f", "json")
    assert again.exit_code == 0 and json.loads(again.stdout) == []  # nothing left to move


def test_dupes_usage_errors_and_bad_files(tmp_path):
    library(tmp_path / "photos")
    (tmp_path / "photos" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    assert run("dupes", tmp_path / "photos", "--near-threshold", "65").exit_code == 2
    result = run("dupes", tmp_path / "photos", "--dry-run")
    assert result.exit_code == 2 and "--move-into" in result.stderr
    result = run("dupes", tmp_path / "photos", "-f", "jsonl")
    assert result.exit_code == 0 and "skipped" in result.stderr and "broken.jpg" in result.stderr
    assert "Traceback" not in result.output


def test_dupes_of_many_stored_photos_uses_their_stored_hashes(tmp_path):
    files = library(tmp_path / "photos")
    assert run("dupes", tmp_path / "photos", "-q", "-f", "jsonl").exit_code == 0
    files["b"].chmod(0)  # unreadable now: a second run must not need to read it again... unless it changed
    try:
        result = run("dupes", tmp_path / "photos", "-f", "jsonl")
        assert result.exit_code == 0 and "b.jpg" not in result.stderr
    finally:
        files["b"].chmod(0o644)


# -- keywords in XMP sidecars --------------------------------------------------------------------------------
def exiftool_tags(path: Path) -> dict:
    out = subprocess.run(
        [EXIFTOOL, "-j", "-XMP:Subject", "-XMP:HierarchicalSubject", str(path)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)[0]
    as_list = lambda v: v if isinstance(v, list) else ([] if v is None else [v])  # noqa: E731
    return {"subject": as_list(found.get("Subject")), "hierarchy": as_list(found.get("HierarchicalSubject"))}


def shapes_photos(root: Path) -> list[Path]:
    src = Path(__file__).resolve().parents[1] / "examples" / "shapes"
    root.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy(p, root / p.name)) for p in sorted(src.glob("*.png"))[:4]]


@needs_exiftool
def test_write_tags_keeps_the_users_keywords_and_a_rerun_replaces_only_zsclips(tmp_path):
    photos = shapes_photos(tmp_path / "p")
    originals = {p: p.read_bytes() for p in photos}
    first = photos[0]
    Path(f"{first}.xmp").write_text(
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:subject><rdf:Bag>'
        "<rdf:li>holiday</rdf:li><rdf:li>blue cross</rdf:li></rdf:Bag></dc:subject></rdf:Description></rdf:RDF>"
        "</x:xmpmeta>"
    )
    result = run("classify", tmp_path / "p", "-c", CLASSES, *SHAPES, "-f", "jsonl", "--write-tags", "xmp")
    assert result.exit_code == 0, result.output
    labels = {json.loads(line)["path"]: json.loads(line)["label"] for line in result.stdout.splitlines()}
    for photo in photos:
        tags = exiftool_tags(Path(f"{photo}.xmp"))
        label = labels[str(photo)]
        assert label in tags["subject"] and tags["hierarchy"] == [f"zsclip|{label}"]
        assert photo.read_bytes() == originals[photo]  # the photo itself is never touched
    assert "holiday" in exiftool_tags(Path(f"{first}.xmp"))["subject"]
    result = run("classify", tmp_path / "p", "-c", "shape,thing", *SHAPES, "-f", "jsonl", "--write-tags", "xmp")
    relabelled = {json.loads(line)["path"]: json.loads(line)["label"] for line in result.stdout.splitlines()}
    tags = exiftool_tags(Path(f"{first}.xmp"))
    assert tags["hierarchy"] == [f"zsclip|{relabelled[str(first)]}"]
    assert "holiday" in tags["subject"] and "blue cross" in tags["subject"]  # the user's own keyword, kept
    other = exiftool_tags(Path(f"{photos[1]}.xmp"))
    assert labels[str(photos[1])] not in other["subject"] or labels[str(photos[1])] == relabelled[str(photos[1])]


@needs_exiftool
def test_write_tags_top_k_lightroom_names_and_embedded(tmp_path):
    photos = shapes_photos(tmp_path / "p")
    args = ["-c", CLASSES, *SHAPES, "-q", "-f", "jsonl", "--top-k", "3"]
    result = run(
        "classify", tmp_path / "p", *args, "--write-tags", "xmp", "--tags-top-k", "2", "--sidecar", "lightroom"
    )
    assert result.exit_code == 0, result.output
    records = {json.loads(line)["path"]: json.loads(line) for line in result.stdout.splitlines()}
    for photo in photos:
        assert not Path(f"{photo}.xmp").exists()
        tags = exiftool_tags(photo.with_suffix(".xmp"))
        assert tags["hierarchy"] == [f"zsclip|{t['label']}" for t in records[str(photo)]["top_k"][:2]]
    jpeg = tmp_path / "j" / "photo.jpg"
    jpeg.parent.mkdir()
    Image.open(photos[0]).convert("RGB").save(jpeg, quality=95)
    result = run("classify", jpeg, "-c", CLASSES, *SHAPES, "-q", "-f", "jsonl", "--write-tags", "embedded")
    assert result.exit_code == 0, result.output
    assert exiftool_tags(jpeg)["hierarchy"] == [f"zsclip|{json.loads(result.stdout)['label']}"]
    assert Image.open(jpeg).size == Image.open(photos[0]).size


def test_lightroom_names_never_let_two_photos_share_one_sidecar(tmp_path):
    photos = shapes_photos(tmp_path / "p")
    twin = photos[0].with_suffix(".jpg")  # blue_cross.jpg beside blue_cross.png: one NAME.xmp for both
    Image.open(photos[0]).convert("RGB").save(twin)
    args = ["-c", CLASSES, *SHAPES, "-f", "jsonl", "--write-tags", "xmp", "--sidecar", "lightroom"]
    result = run("classify", tmp_path / "p", *args)
    assert result.exit_code == 0, result.output
    assert f"no keywords for {twin}" in " ".join(result.stderr.split()) or f"no keywords for {photos[0]}" in " ".join(
        result.stderr.split()
    )
    assert photos[0].with_suffix(".xmp").exists()


def test_write_tags_usage_errors(tmp_path):
    shapes_photos(tmp_path / "p")
    assert run("classify", tmp_path / "p", "-c", CLASSES, *SHAPES, "--write-tags", "iptc").exit_code == 2
    assert run("classify", tmp_path / "p", "-c", CLASSES, *SHAPES, "--tags-top-k", "2").exit_code == 2
    result = run("classify", tmp_path / "p", "-c", CLASSES, *SHAPES, "--write-tags", "xmp", "--sidecar", "x")
    assert result.exit_code == 2 and "--sidecar" in result.stderr


@needs_exiftool
def test_a_killed_tagging_run_leaves_every_sidecar_whole(tmp_path):
    photos = shapes_photos(tmp_path / "p")
    for i in range(40):
        shutil.copy(photos[i % len(photos)], tmp_path / "p" / f"extra_{i:02d}.png")
    cmd = [sys.executable, "-m", "zsclip", "classify", str(tmp_path / "p"), "-c", CLASSES, *SHAPES, "-q"]
    cmd += ["--write-tags", "xmp", "--workers", "0", "--batch-size", "2", "-f", "jsonl"]
    for delay in (1.5, 2.5, 3.5):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for sidecar in (tmp_path / "p").glob("*.xmp"):
            tags = exiftool_tags(sidecar)
            assert len(tags["hierarchy"]) == 1 and tags["hierarchy"][0].startswith("zsclip|"), sidecar


# -- when, where, which camera ----------------------------------------------------------------------------------
def dated_photos(root: Path) -> dict[str, Path]:
    root.mkdir(parents=True, exist_ok=True)
    made = {
        "old_canon": ("2019:07:14 09:30:00", "Canon", "Canon EOS R5", True),
        "new_pixel": ("2024:06:01 14:03:22", "Google", "Pixel 8", False),
        "new_canon": ("2024:08:20 18:00:00", "Canon", "Canon EOS R5", False),
        "undated": (None, None, None, False),
    }
    out = {}
    for i, (name, (taken, make, model, gps)) in enumerate(made.items()):
        path = root / f"{name}.jpg"
        picture(10 + i).save(path, quality=90, exif=exif_bytes(taken, make, model, gps))
        out[name] = path
    return out


def test_search_filters_by_date_camera_and_gps_from_exif(tmp_path):
    photos = dated_photos(tmp_path / "p")
    base = ["search", "a photo", tmp_path / "p", "-m", "shapes", "-f", "jsonl", "--top", "10", "-q"]

    def found(*extra) -> set[str]:
        result = run(*base, *extra)
        assert result.exit_code == 0, result.output
        return {Path(json.loads(line)["path"]).stem for line in result.stdout.splitlines()}

    assert found() == set(photos)
    assert found("--taken-after", "2024-01-01") == {"new_pixel", "new_canon"}
    assert found("--taken-before", "2024-06-01T14:03:23") == {"old_canon", "new_pixel"}
    assert found("--taken-after", "2024-06-01", "--taken-before", "2024-06-02") == {"new_pixel"}
    assert found("--camera", "canon") == {"old_canon", "new_canon"}
    assert found("--camera", "pixel 8", "--taken-after", "2020-01-01") == {"new_pixel"}
    assert found("--has-gps") == {"old_canon"}
    assert found("--no-gps", "--camera", "Canon") == {"new_canon"}
    bad = run(*base, "--taken-after", "yesterday")
    assert bad.exit_code == 2 and "--taken-after yesterday" in bad.stderr


@needs_exiftool
def test_classify_exif_columns_match_exiftool(tmp_path):
    photos = dated_photos(tmp_path / "p")
    result = run("classify", tmp_path / "p", "-c", CLASSES, *SHAPES, "-q", "-f", "jsonl", "--exif")
    assert result.exit_code == 0, result.output
    for line in result.stdout.splitlines():
        record = json.loads(line)
        ref = subprocess.run(
            [
                EXIFTOOL,
                "-j",
                "-d",
                "%Y-%m-%dT%H:%M:%S",
                "-DateTimeOriginal",
                "-Make",
                "-Model",
                "-GPSLatitude",
                record["path"],
            ],
            capture_output=True,
            text=True,
        )
        expected = json.loads(ref.stdout)[0]
        assert record["taken"] == expected.get("DateTimeOriginal")
        make, model = expected.get("Make"), expected.get("Model")
        camera = model if not make or model.lower().startswith(make.lower()) else f"{make} {model}"
        assert record["camera"] == camera
        assert record["gps"] == ("GPSLatitude" in expected)
    csv_out = run("classify", photos["new_pixel"], "-c", CLASSES, *SHAPES, "-q", "-f", "csv", "--exif")
    header, row = csv_out.stdout.splitlines()[:2]
    assert header.endswith(",taken,camera,gps") and row.endswith(",2024-06-01T14:03:22,Google Pixel 8,False")


def test_serve_search_takes_the_same_filters(tmp_path):
    pytest.importorskip("starlette")
    from starlette.testclient import TestClient

    from zsclip.backends import load_model
    from zsclip.serve.app import make_app
    from zsclip.serve.guard import Guard
    from zsclip.serve.library import Library

    dated_photos(tmp_path / "p")
    model = load_model("shapes", device="cpu", show=False)
    library = Library(model, [str(tmp_path / "p")], os.environ["ZSCLIP_CACHE_DIR"])
    library.scan()
    client = TestClient(
        make_app(library, Guard("127.0.0.1", "t")), base_url="http://127.0.0.1", headers={"Authorization": "token t"}
    )
    hits = client.get("/api/search", params={"q": "a photo", "top": 10, "camera": "canon", "taken_after": "2024-01-01"})
    assert hits.status_code == 200, hits.text
    assert [Path(h["path"]).stem for h in hits.json()["results"]] == ["new_canon"]
    assert client.get("/api/search", params={"q": "x", "taken_after": "soon"}).status_code == 400


# -- formats ---------------------------------------------------------------------------------------------------
def test_heic_made_with_pillow_heif_is_classified_and_dated(tmp_path):
    pillow_heif = pytest.importorskip("pillow_heif")
    src = shapes_photos(tmp_path / "png")[0]
    heic = tmp_path / "h" / "IMG_0001.HEIC"
    heic.parent.mkdir()
    image = Image.open(src).convert("RGB")
    pillow_heif.from_pillow(image).save(heic, quality=95, exif=exif_bytes("2023:05:06 07:08:09", "Apple", "iPhone 15"))
    result = run("classify", heic, src, "-c", CLASSES, *SHAPES, "-q", "-f", "jsonl", "--exif")
    assert result.exit_code == 0, result.output
    heic_record, png_record = (json.loads(line) for line in result.stdout.splitlines())
    assert heic_record["label"] == png_record["label"]
    assert heic_record["taken"] == "2023-05-06T07:08:09" and heic_record["camera"] == "Apple iPhone 15"


def test_mpo_reads_as_its_first_picture(tmp_path):
    src = shapes_photos(tmp_path / "png")[0]
    first = Image.open(src).convert("RGB")
    mpo = tmp_path / "m" / "stereo.mpo"
    mpo.parent.mkdir()
    first.save(mpo, format="MPO", save_all=True, append_images=[first.transpose(Image.FLIP_LEFT_RIGHT)], quality=95)
    result = run("classify", tmp_path / "m", src, "-c", CLASSES, *SHAPES, "-q", "-f", "jsonl")
    assert result.exit_code == 0, result.output
    mpo_record, png_record = (json.loads(line) for line in result.stdout.splitlines())
    assert mpo_record["path"].endswith("stereo.mpo") and mpo_record["label"] == png_record["label"]


def test_a_raw_beside_its_jpeg_is_one_photo_and_a_lone_raw_without_the_extra_names_it(tmp_path, monkeypatch):
    folder = tmp_path / "camera"
    folder.mkdir()
    Image.open(shapes_photos(tmp_path / "png")[0]).convert("RGB").save(folder / "IMG_0001.JPG", quality=95)
    (folder / "IMG_0001.CR2").write_bytes(b"II*\x00" + bytes(100))  # its RAW: the JPEG stands for it
    (folder / "IMG_0002.NEF").write_bytes(b"MM\x00*" + bytes(100))  # a RAW alone
    monkeypatch.setitem(sys.modules, "rawpy", None)  # the photos extra missing
    result = run("classify", folder, "-c", CLASSES, *SHAPES, "-f", "jsonl", "--workers", "0")
    assert result.exit_code == 0, result.output
    assert [Path(json.loads(line)["path"]).name for line in result.stdout.splitlines()] == ["IMG_0001.JPG"]
    assert "IMG_0001.CR2" not in result.stderr
    assert "IMG_0002.NEF" in result.stderr and "pip install 'zsclip[photos]'" in result.stderr


def test_a_raw_is_read_from_its_embedded_preview(tmp_path, monkeypatch):
    """rawpy's interface (extract_thumb) stood in by a fake, so the test needs no camera file: the preview JPEG,
    with its EXIF, is what gets classified."""
    import io
    import types

    src = shapes_photos(tmp_path / "png")[0]
    preview = io.BytesIO()
    Image.open(src).convert("RGB").save(preview, "JPEG", quality=95, exif=exif_bytes("2022:01:02 03:04:05", "Nikon"))

    class Raw:
        def __enter__(self):
            return self

        def __exit__(self, *a):
            return None

        def extract_thumb(self):
            return types.SimpleNamespace(format="jpeg", data=preview.getvalue())

    fake = types.SimpleNamespace(
        imread=lambda path: Raw(),
        ThumbFormat=types.SimpleNamespace(JPEG="jpeg", BITMAP="bitmap"),
        LibRawNoThumbnailError=RuntimeError,
        LibRawUnsupportedThumbnailError=RuntimeError,
    )
    monkeypatch.setitem(sys.modules, "rawpy", fake)
    raw = tmp_path / "r" / "DSC_0001.NEF"
    raw.parent.mkdir()
    raw.write_bytes(b"MM\x00*" + bytes(100))
    result = run("classify", raw, src, "-c", CLASSES, *SHAPES, "-q", "-f", "jsonl", "--exif", "--workers", "0")
    assert result.exit_code == 0, result.output
    raw_record, png_record = (json.loads(line) for line in result.stdout.splitlines())
    assert raw_record["label"] == png_record["label"] and raw_record["taken"] == "2022-01-02T03:04:05"


# -- found by the review of issue 33 ------------------------------------------------------------------------------
@needs_exiftool
def test_a_photo_moved_by_sort_into_is_tagged_where_it_goes_and_takes_its_sidecar_and_raw(tmp_path):
    photos = shapes_photos(tmp_path / "p")
    first = photos[0]
    Path(f"{first}.xmp").write_text(
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:subject><rdf:Bag>'
        "<rdf:li>userkw</rdf:li></rdf:Bag></dc:subject></rdf:Description></rdf:RDF></x:xmpmeta>"
    )
    jpeg = tmp_path / "p" / "IMG_0001.jpg"
    Image.open(photos[1]).convert("RGB").save(jpeg, quality=95)
    raw = tmp_path / "p" / "IMG_0001.DNG"
    raw.write_bytes(b"II*\x00" + bytes(64))
    originals = {p.name: p.read_bytes() for p in [*photos, jpeg]}
    out = tmp_path / "sorted"
    args = ["-c", CLASSES, *SHAPES, "-f", "jsonl", "--write-tags", "xmp", "--sort-into", out, "--mode", "move"]
    result = run("classify", tmp_path / "p", *args)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == []  # photos, sidecars and the RAW all went
    for name, data in originals.items():
        (moved,) = out.glob(f"*/{name}")
        assert moved.read_bytes() == data  # never turned into a sidecar
        tags = exiftool_tags(Path(f"{moved}.xmp"))
        assert len(tags["hierarchy"]) == 1 and tags["hierarchy"][0] == f"zsclip|{moved.parent.name}"
    (moved_first,) = out.glob(f"*/{first.name}")
    assert "userkw" in exiftool_tags(Path(f"{moved_first}.xmp"))["subject"]
    (moved_jpeg,) = out.glob("*/IMG_0001.jpg")
    assert (moved_jpeg.parent / "IMG_0001.DNG").read_bytes() == b"II*\x00" + bytes(64)


def test_a_file_reached_by_two_paths_is_never_its_own_duplicate(tmp_path):
    files = library(tmp_path / "lib")
    (tmp_path / "link").symlink_to(tmp_path / "lib")
    (tmp_path / "lib" / "alias.jpg").symlink_to(files["b"])
    result = run("dupes", tmp_path / "lib", tmp_path / "link", "--move-into", tmp_path / "moved", "-f", "json")
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout)
    assert all(Path(r["path"]) == Path(os.path.realpath(r["path"])) for r in records)
    assert str(files["b"]) not in {r["path"] for r in records}  # b and its alias are one file
    assert files["b"].exists() and files["a"].exists() and (tmp_path / "lib" / "alias.jpg").exists()


def test_no_file_marked_keep_is_moved_and_the_cameras_original_is_kept(tmp_path):
    root = tmp_path / "lib"
    (root / "orig").mkdir(parents=True)
    (root / "backup").mkdir()
    (root / "export").mkdir()
    im = picture(7, (300, 200))
    im.save(root / "orig" / "photo.jpg", quality=92, exif=exif_bytes("2019:01:02 03:04:05", "Canon", "EOS R5"))
    shutil.copy(root / "orig" / "photo.jpg", root / "backup" / "photo.jpg")
    im.resize((600, 400), Image.LANCZOS).save(root / "export" / "photo_big.jpg", quality=90)  # upscaled, no EXIF
    os.utime(root / "backup" / "photo.jpg", ns=(2_000_000_000_000_000_000,) * 2)
    result = run("dupes", root, "--move-into", tmp_path / "moved", "-f", "json")
    records = json.loads(result.stdout)
    kept = {r["path"] for r in records if r["keep"]}
    assert kept == {str(root / "orig" / "photo.jpg")}
    assert (root / "orig" / "photo.jpg").exists()
    for r in records:
        assert Path(r["path"]).exists() == r["keep"]


def test_dupes_move_takes_sidecars_along_and_folders_survive_a_resume(tmp_path):
    files = library(tmp_path / "lib")
    Path(f"{files['a_q30']}.xmp").write_text("<x:xmpmeta xmlns:x='adobe:ns:meta/'/>")
    from zsclip.photos.dupes import candidates, find_dupes
    from zsclip.pipeline.sources import expand_sources

    first, _ = find_dupes(candidates(expand_sources([str(tmp_path / "lib")])))
    files["a_small"].unlink()  # as if a move had taken it before a kill
    second, _ = find_dupes(candidates(expand_sources([str(tmp_path / "lib")])))
    assert {g[0].key for g in first} == {g[0].key for g in second}
    result = run("dupes", tmp_path / "lib", "--move-into", tmp_path / "moved", "-q")
    assert result.exit_code == 0, result.output
    (moved,) = (tmp_path / "moved").glob("near-*/a_q30.jpg")
    assert Path(f"{moved}.xmp").exists() and not Path(f"{files['a_q30']}.xmp").exists()


def test_a_photo_that_cannot_take_keywords_is_said_and_the_run_goes_on(tmp_path):
    photos = shapes_photos(tmp_path / "p")
    Image.open(photos[0]).save(tmp_path / "p" / "anim.gif")
    Path(f"{photos[1]}.xmp").write_bytes(b"")  # an empty sidecar: made anew
    result = run("classify", tmp_path / "p", "-c", CLASSES, *SHAPES, "-f", "jsonl", "--write-tags", "embedded")
    assert result.exit_code == 0, result.output
    assert "no keywords for" in result.stderr and "anim.gif" in result.stderr
    result = run("classify", tmp_path / "p", "-c", CLASSES, *SHAPES, "-f", "jsonl", "--write-tags", "xmp")
    assert result.exit_code == 0 and Path(f"{photos[1]}.xmp").stat().st_size > 0


def test_the_capture_time_is_when_it_was_taken_never_when_it_was_edited():
    import io

    from zsclip.photos.exif import capture_of

    def capture(exif: Image.Exif):
        data = io.BytesIO()
        picture(1, (32, 32)).save(data, "JPEG", exif=exif.tobytes())
        return capture_of(Image.open(data))

    edited = Image.Exif()
    edited[0x0132] = "2024:07:01 10:00:00"  # ModifyDate only
    assert capture(edited).taken is None
    blank = Image.Exif()
    blank.get_ifd(0x8769).update({0x9003: "    :  :     :  :  ", 0x9004: "2018:03:03 12:00:00"})
    assert capture(blank).taken == "2018-03-03T12:00:00"
    dashed = Image.Exif()
    dashed.get_ifd(0x8769)[0x9003] = "2024-06-01 14:03:22"
    assert capture(dashed).taken == "2024-06-01T14:03:22"


def test_flat_pictures_are_no_ones_near_duplicates(tmp_path):
    root = tmp_path / "flat"
    root.mkdir()
    Image.new("RGB", (300, 200), (0, 0, 0)).save(root / "black.jpg")
    Image.new("RGB", (300, 200), (250, 250, 250)).save(root / "white.jpg")
    Image.new("RGB", (300, 200), (90, 140, 220)).save(root / "sky.png")
    result = run("dupes", root, "-f", "json")
    assert result.exit_code == 0 and json.loads(result.stdout) == []


def test_the_new_users_findings_on_dupes(tmp_path):
    files = library(tmp_path / "lib")
    result = run("dupes", tmp_path / "lib", "--move-into", tmp_path / "lib")
    assert result.exit_code == 2 and "--move-into" in result.stderr and not (tmp_path / "lib" / "manifest.csv").exists()
    (tmp_path / "afile").write_text("x")
    result = run("dupes", tmp_path / "lib", "--move-into", tmp_path / "afile")
    assert result.exit_code == 2 and "--move-into" in result.stderr and "--sort-into" not in result.stderr
    dry = run("dupes", tmp_path / "lib", "--move-into", tmp_path / "m", "--dry-run", "-o", tmp_path / "d.csv")
    assert dry.exit_code == 0 and (tmp_path / "d.csv").exists()
    planned = [line for line in dry.stdout.splitlines() if str(files["a_small"]) in line]
    assert len(planned) == 1  # a file in an exact and a near group is moved once
    table = run("dupes", tmp_path / "lib", "-f", "table", "-o", tmp_path / "t.txt")
    assert table.exit_code == 0 and "keep" in (tmp_path / "t.txt").read_text().splitlines()[0]
    (tmp_path / "lib" / "dangling.jpg").symlink_to(tmp_path / "nowhere.jpg")
    result = run("dupes", tmp_path / "lib", "--move-into", tmp_path / "m", "--report", tmp_path / "page")
    assert result.exit_code == 0 and "dangling.jpg" in result.stderr
    page = (tmp_path / "page" / "dupes.html").read_text()
    assert "moved to" in page and (tmp_path / "m").as_uri() in page


def test_a_folder_where_a_sidecar_goes_is_said_and_a_zoned_time_is_refused(tmp_path):
    photos = shapes_photos(tmp_path / "p")
    Path(f"{photos[1]}.xmp").mkdir()
    result = run("classify", tmp_path / "p", "-c", CLASSES, *SHAPES, "-f", "jsonl", "--write-tags", "xmp")
    assert result.exit_code == 0 and f"no keywords for {photos[1]}" in " ".join(result.stderr.split())
    assert Path(f"{photos[2]}.xmp").is_file()
    result = run("search", "x", tmp_path / "p", "-m", "shapes", "--taken-after", "2024-06-01T14:30Z")
    assert result.exit_code == 2 and "time zone" in result.stderr
    result = run("classify", tmp_path / "p", "-c", CLASSES, *SHAPES, "--sidecar", "lightroom")
    assert result.exit_code == 2 and "--write-tags" in result.stderr
