import csv
import io
import json
import time
from pathlib import Path

import open_clip
import pytest
import torch
from open_clip.zero_shot_metadata import SIMPLE_IMAGENET_TEMPLATES
from PIL import Image
from typer.testing import CliRunner

import zsclip
from zsclip.cli import app

from .conftest import SHARED_DATA, sample_images, shared

runner = CliRunner()
CLASSES = "airplane,automobile,bird,cat,deer,dog,frog,horse,ship,truck"


def run(*args, env=None):
    return runner.invoke(app, [str(a) for a in args], env=env)


@pytest.fixture
def folder(tmp_path) -> Path:
    """Four real CIFAR-10 images (symlinked, never copied into the repo; generated ones where ../shared/data is
    missing), two of them in a subfolder, plus one generated JPEG."""
    root = tmp_path / "photos"
    (root / "nested").mkdir(parents=True)
    if SHARED_DATA.joinpath("cifar10-test").is_dir():
        for i, (path, _) in enumerate(sample_images("cifar10-test", 1, 4)):
            (root / ("nested" if i % 2 else "") / f"{i}_{path.name}").symlink_to(path)
    else:
        for i in range(4):
            Image.new("RGB", (32, 32), (60 * i, 90, 200 - 40 * i)).save(root / ("nested" if i % 2 else "") / f"{i}.png")
    Image.new("RGB", (40, 30), (200, 10, 10)).save(root / "red.jpg")
    return root


def test_jsonl_records_have_label_prob_and_top_k(tiny_model_dir, folder):
    result = run("classify", folder, "--classes", CLASSES, "--model", tiny_model_dir, "--templates", "photo")
    assert result.exit_code == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == 5
    for r in records:
        assert set(r) == {"path", "label", "prob", "top_k", "abstained"}
        assert r["label"] == r["top_k"][0]["label"] and r["prob"] == r["top_k"][0]["prob"]
        assert len(r["top_k"]) == 3
        assert [t["prob"] for t in r["top_k"]] == sorted((t["prob"] for t in r["top_k"]), reverse=True)
    assert records[0]["path"] == str(next(folder.glob("0*")))
    assert [Path(r["path"]).parent.name for r in records] == ["photos", "photos", "nested", "nested", "photos"]
    assert "classified 5 images" in result.stderr


def test_probabilities_are_the_softmax_of_scaled_cosines(tiny_model_dir, folder):
    result = run("classify", folder / "red.jpg", "-c", "red,green,blue", "-m", tiny_model_dir, "-t", "photo")
    record = json.loads(result.stdout)
    model = zsclip.load_model(str(tiny_model_dir))
    clf = zsclip.build_classifier(model, ["red", "green", "blue"], "photo")
    image = torch.from_numpy(model.preprocess(Image.open(folder / "red.jpg").convert("RGB"))).unsqueeze(0)
    with torch.no_grad():
        feats = torch.nn.functional.normalize(model.model.encode_image(image), dim=-1)
    probs = (model.logit_scale * feats @ torch.from_numpy(clf.weights).T).softmax(-1)[0]
    expected = {name: p for name, p in zip(["red", "green", "blue"], probs.tolist(), strict=True)}
    assert {t["label"]: t["prob"] for t in record["top_k"]} == pytest.approx(expected, abs=1e-5)
    assert sum(t["prob"] for t in record["top_k"]) == pytest.approx(1.0, abs=1e-5)


def test_json_csv_and_table_formats(tiny_model_dir, folder):
    common = [folder, "-c", CLASSES, "-m", tiny_model_dir, "-t", "photo", "--top-k", "2"]
    as_json = json.loads(run("classify", *common, "--format", "json").stdout)
    assert isinstance(as_json, list) and len(as_json) == 5 and len(as_json[0]["top_k"]) == 2

    rows = list(csv.DictReader(io.StringIO(run("classify", *common, "-f", "csv").stdout)))
    assert [r["path"] for r in rows] == [r["path"] for r in as_json]
    assert list(rows[0]) == ["path", "label", "prob", "abstained", "label_1", "prob_1", "label_2", "prob_2"]
    assert [r["label"] for r in rows] == [r["label"] for r in as_json]

    table = run("classify", *common, "-f", "table").stdout
    assert "red.jpg" in table and as_json[0]["label"] in table


def test_output_file_takes_format_from_extension(tiny_model_dir, folder, tmp_path):
    out = tmp_path / "preds.csv"
    result = run("classify", folder, "-c", CLASSES, "-m", tiny_model_dir, "-t", "photo", "-o", out)
    assert result.exit_code == 0 and result.stdout == ""
    assert out.read_text().startswith("path,label,prob,abstained,label_1")
    assert f"results in {out}" in result.stderr


def test_threshold_abstains(tiny_model_dir, folder):
    result = run("classify", folder, "-c", CLASSES, "-m", tiny_model_dir, "-t", "photo", "--threshold", "0.99")
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert all(r["label"] == "unknown" and r["abstained"] for r in records)
    low = run("classify", folder, "-c", CLASSES, "-m", tiny_model_dir, "-t", "photo", "--threshold", "0")
    assert not any(json.loads(line)["abstained"] for line in low.stdout.splitlines())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-c", "cat,,dog"], "--classes: empty class name at position 2"),
        (["-c", "cat,dog,cat"], "duplicate class names: 'cat'"),
        (["-c", "cat"], "at least 2 class names"),
        ([], "no classes given"),
        (["-c", "a,b", "--threshold", "1.5"], "--threshold 1.5: must be a probability"),
        (["-c", "a,b", "--format", "xml"], "--format xml: use one of"),
        (["-c", "a,b", "--templates", "nosuchset"], "unknown template set 'nosuchset'"),
        (["-c", "a,b", "--bogus"], "No such option: --bogus"),
        (["-c", "a,b", "--top-k", "0"], "--top-k 0: must be at least 1"),
        (["-c", "a,b", "--batch-size", "0"], "--batch-size 0: must be at least 1"),
        (["-c", "a,b", "--workers", "-1"], "--workers -1: must be 0 or more"),
        (["-c", "a,b", "--classes-file", "x.txt"], "give --classes or --classes-file, not both"),
        (["-c", "a,b", "--resume"], "--resume needs --output FILE"),
        (["-c", "a,b", "-o", "r.jsonl", "--failures", "r.jsonl"], "--failures and --output are both r.jsonl"),
        (["-c", "a,b", "-m", "ViT-B-32:no-such-tag"], "unknown pretrained tag 'no-such-tag' for ViT-B-32"),
    ],
)
def test_usage_errors_exit_2_with_one_line(tiny_model_dir, folder, args, message):
    result = run("classify", folder, "-m", tiny_model_dir, *args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_missing_folder_and_folder_without_images(tiny_model_dir, tmp_path):
    missing = run("classify", tmp_path / "nope", "-c", "a,b", "-m", tiny_model_dir)
    assert missing.exit_code == 2 and "nope: no such file or directory" in missing.stderr
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    empty = run("classify", tmp_path / "empty", "-c", "a,b", "-m", tiny_model_dir)
    assert empty.exit_code == 2 and "no images found under" in empty.stderr and ".jpg" in empty.stderr


def test_corrupt_files_are_skipped_reported_and_listed(tiny_model_dir, folder, tmp_path):
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    (folder / "page.png").write_text("<html></html>")
    failures = tmp_path / "failures.jsonl"
    result = run("classify", folder, "-c", CLASSES, "-m", tiny_model_dir, "-t", "photo", "--failures", failures)
    assert result.exit_code == 0
    assert len(result.stdout.splitlines()) == 5
    assert f"skipped {folder / 'broken.jpg'}: " in result.stderr
    assert f"skipped {folder / 'page.png'}: not a recognised image format" in result.stderr
    assert "skipped 2 bad files" in result.stderr
    logged = [json.loads(line) for line in failures.read_text().splitlines()]
    assert {Path(r["path"]).name for r in logged} == {"broken.jpg", "page.png"}
    assert "Traceback" not in result.stderr

    strict = run("classify", folder, "-c", CLASSES, "-m", tiny_model_dir, "-t", "photo", "--strict")
    assert strict.exit_code == 1 and "--strict" in strict.stderr


def test_all_files_bad_is_a_failed_run(tiny_model_dir, tmp_path):
    (tmp_path / "a.jpg").write_text("nope")
    result = run("classify", tmp_path, "-c", "a,b", "-m", tiny_model_dir, "-t", "photo")
    assert result.exit_code == 1 and "no image could be read: its one file was skipped" in result.stderr


def test_offline_pretrained_tag_is_one_line_exit_1(hf_cache, folder):
    start = time.monotonic()
    result = run("classify", folder, "-c", "a,b", "--model", "ViT-B-32:openai")
    assert result.exit_code == 1
    assert result.stderr.strip().startswith("error: cannot load model ViT-B-32:openai")
    assert len(result.stderr.strip().splitlines()) == 1
    assert time.monotonic() - start < 15


def test_unknown_model_suggests_close_names(folder):
    result = run("classify", folder, "-c", "a,b", "--model", "ViT-B-32:opanai")
    assert result.exit_code == 2 and "available:" in result.stderr and "openai" in result.stderr


def test_env_vars_set_options(tiny_model_dir, folder):
    env = {
        "ZSCLIP_MODEL": str(tiny_model_dir),
        "ZSCLIP_CLASSES": "cat,dog",
        "ZSCLIP_TEMPLATES": "photo",
        "ZSCLIP_FORMAT": "json",
        "ZSCLIP_TOP_K": "1",
    }
    result = run("classify", folder, env=env)
    records = json.loads(result.stdout)
    assert len(records) == 5 and all(len(r["top_k"]) == 1 for r in records)


def test_top_k_is_clamped_to_the_number_of_classes(tiny_model_dir, folder):
    result = run("classify", folder, "-c", "cat,dog", "-m", tiny_model_dir, "-t", "photo", "--top-k", "5")
    assert all(len(json.loads(line)["top_k"]) == 2 for line in result.stdout.splitlines())
    assert "note: --top-k 5 is more than the 2 classes; listing 2" in result.stderr


def test_second_run_reuses_the_cache(tiny_model_dir, folder):
    args = ["classify", folder, "-c", CLASSES, "-m", tiny_model_dir, "-t", "imagenet7"]
    first = run(*args)
    info = run("cache", "info")
    assert "70 text vectors" in info.stdout and str(tiny_model_dir) in info.stdout
    second = run(*args)
    assert second.stdout == first.stdout
    assert "70 text vectors" in run("cache", "info").stdout
    assert "5 image vectors" in info.stdout
    cleared = run("cache", "clear", "--model", tiny_model_dir)
    assert "removed 70 text vectors and 5 image vectors" in cleared.stdout
    assert "nothing cached" in run("cache", "info").stdout


def test_cache_path_follows_env(private_cache):
    assert run("cache", "path").stdout.strip() == str(private_cache)


def test_models_lists_pretrained_tags():
    result = run("models", "--format", "jsonl")
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert {"spec": "ViT-B-32:openai", "source": "open_clip"}.items() <= next(
        r for r in rows if r["spec"] == "ViT-B-32:openai"
    ).items()


def test_parity_with_open_clip_on_real_images(tiny_model_dir, tmp_path):
    """Same top-1 labels as open_clip's own preprocess, encode_image and build_zero_shot_classifier."""
    images = [p for p, _ in sample_images("cifar10-test", 20)] + [
        p for p, _ in sample_images("imagenet-samples", 1, 60)
    ]
    assert len(images) >= 250
    listing = tmp_path / "images.txt"
    listing.write_text("\n".join(map(str, images)))
    classes = CLASSES.split(",")
    result = run(
        "classify",
        f"@{listing}",
        "-c",
        CLASSES,
        "-m",
        tiny_model_dir,
        "-t",
        "imagenet7",
        "--workers",
        "1",
        "--exact-preprocess",
    )
    ours = [json.loads(line)["label"] for line in result.stdout.splitlines()]

    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{tiny_model_dir}")
    model.eval()
    tokenizer = open_clip.get_tokenizer(f"local-dir:{tiny_model_dir}")
    with torch.no_grad():
        weights = open_clip.build_zero_shot_classifier(model, tokenizer, classes, SIMPLE_IMAGENET_TEMPLATES)
        pixels = torch.stack([preprocess(Image.open(p)) for p in images])
        feats = torch.nn.functional.normalize(model.encode_image(pixels), dim=-1)
    reference = [classes[i] for i in (feats @ weights).argmax(-1).tolist()]
    assert len(ours) == len(reference)
    assert ours == reference


def test_the_classify_guide_documents_every_classify_option():
    import typer.main

    root = Path(__file__).resolve().parents[1]
    guide = (root / "README.md").read_text() + (root / "docs" / "classify.md").read_text()
    group = typer.main.get_command(app)
    command = group.get_command(group.context_class(group), "classify")
    for param in command.params:
        for opt in param.opts:
            if opt.startswith("--"):
                assert f"`{opt}" in guide, f"neither README.md nor docs/classify.md documents {opt}"


def test_siglip_style_model_classifies_through_the_generic_path(tiny_siglip_dir, folder):
    result = run("classify", folder, "-c", "cat,dog,ship", "-m", tiny_siglip_dir, "-t", "imagenet7")
    assert result.exit_code == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == 5 and all(sum(t["prob"] for t in r["top_k"]) == pytest.approx(1, abs=1e-5) for r in records)


def test_bf16_autocast_agrees_with_fp32(tiny_model_dir, folder):
    args = ["classify", folder, "-c", CLASSES, "-m", tiny_model_dir, "-t", "photo", "--device", "cpu"]
    fp32 = [json.loads(line) for line in run(*args).stdout.splitlines()]
    bf16 = [json.loads(line) for line in run(*args, "--precision", "bf16").stdout.splitlines()]
    assert [r["path"] for r in bf16] == [r["path"] for r in fp32]
    assert max(abs(a["prob"] - b["prob"]) for a, b in zip(fp32, bf16, strict=True)) < 0.05


def test_classes_file_from_a_real_classes_tsv(tiny_model_dir, folder):
    tsv = shared("cifar10-test") / "classes.tsv"
    result = run("classify", folder, "--classes-file", tsv, "-m", tiny_model_dir, "-t", "photo", "--top-k", "10")
    labels = {t["label"] for t in json.loads(result.stdout.splitlines()[0])["top_k"]}
    assert labels == set(CLASSES.split(","))
    both = run("classify", folder, "--classes-file", tsv, "-c", "a,b", "-m", tiny_model_dir)
    assert both.exit_code == 2 and "not both" in both.stderr


def test_explicit_files_and_list_files(tiny_model_dir, folder, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text(f"{folder / 'red.jpg'}\n")
    result = run("classify", folder / "red.jpg", f"@{listing}", "-c", "a,b", "-m", tiny_model_dir, "-t", "photo")
    assert [json.loads(line)["path"] for line in result.stdout.splitlines()] == [str(folder / "red.jpg")] * 2
    flat = run("classify", folder, "--no-recursive", "-c", "a,b", "-m", tiny_model_dir, "-t", "photo")
    assert len(flat.stdout.splitlines()) == 3


def test_counts_of_one_are_singular(tiny_model_dir, tmp_path):
    """Issue 21 item 19: '1 samples', '1 models', '1 bad files'."""
    (tmp_path / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    from PIL import Image

    Image.new("RGB", (24, 24), (200, 0, 0)).save(tmp_path / "b.png")
    result = run("classify", tmp_path, "-c", "a,b", "-m", tiny_model_dir, "-t", "photo")
    assert result.exit_code == 0 and "classified 1 image, skipped 1 bad file" in result.stderr
    grid = run("eval", tmp_path / "nonesuch", tmp_path / "nonesuch2", "-m", tiny_model_dir)
    assert "grid: 0 of 2 pairs scored" in grid.stderr
    from zsclip.core.wording import plural

    assert [plural(n, "sample") for n in (0, 1, 2, 1500)] == ["0 samples", "1 sample", "2 samples", "1,500 samples"]
