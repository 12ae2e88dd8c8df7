import csv
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import balanced_accuracy_score, confusion_matrix, precision_recall_fscore_support
from typer.testing import CliRunner

import zsclip
from zsclip import datasets
from zsclip.cli import app
from zsclip.engines import ReadOptions
from zsclip.evaluate import metrics
from zsclip.evaluate.run import embed_dataset, evaluate

from .conftest import SHARED_DATA

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def _clip_benchmark_accuracy(output, target, topk=(1,)):
    """CLIP_benchmark's zeroshot_classification.accuracy, verbatim in substance."""
    pred = output.topk(max(topk), 1, True, True)[1].t()
    correct = pred.eq(target.view(1, -1).expand_as(pred))
    n = len(target)
    return [float(correct[:k].reshape(-1).float().sum(0, keepdim=True).cpu().numpy()[0]) / n for k in topk]


def test_metrics_match_clip_benchmark_definitions():
    rng = np.random.default_rng(0)
    logits = torch.from_numpy(rng.normal(size=(500, 20)))
    target = torch.from_numpy(rng.integers(0, 20, 500))
    target[:200] = logits[:200].argmax(1)  # some signal
    topk = logits.topk(5, 1)[1].numpy()
    ours = metrics.summary(target.numpy(), topk)
    acc1, acc5 = _clip_benchmark_accuracy(logits, target, topk=(1, 5))
    assert ours["acc1"] == pytest.approx(acc1) and ours["acc5"] == pytest.approx(acc5)
    pred = logits.argmax(1).numpy()
    assert ours["mean_per_class_recall"] == pytest.approx(balanced_accuracy_score(target.numpy(), pred))


def test_no_acc5_with_fewer_than_five_classes():
    assert "acc5" not in metrics.summary(np.array([0, 1, 2]), np.array([[0, 1, 2], [1, 0, 2], [0, 1, 2]]))


@pytest.fixture
def labelled_folder(tmp_path) -> Path:
    root = tmp_path / "data"
    colours = {"red_thing": (220, 20, 20), "green_thing": (20, 200, 20), "blue_thing": (20, 20, 220)}
    rng = np.random.default_rng(0)
    for name, rgb in colours.items():
        (root / name).mkdir(parents=True)
        for i in range(7):
            noise = rng.integers(-30, 30, (24, 24, 3))
            Image.fromarray(np.clip(np.array(rgb) + noise, 0, 255).astype(np.uint8)).save(root / name / f"{i}.png")
    (root / "red_thing" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    return root


def test_eval_and_classify_agree_on_a_folder(tiny_model_dir, labelled_folder):
    model = zsclip.load_model(str(tiny_model_dir))
    result = evaluate(model, str(labelled_folder), "imagenet7", workers=0)
    assert result.dataset.classnames == ["blue thing", "green thing", "red thing"]
    assert len(result.paths) == 21 and len(result.skipped) == 1
    clf = zsclip.build_classifier(model, result.dataset.classnames, "imagenet7")
    labels = {r.path: r.label for r in zsclip.classify(model, clf, labelled_folder, workers=0) if hasattr(r, "label")}
    assert [labels[p] for p in result.paths] == [result.dataset.classnames[i] for i in result.topk[:, 0]]


def test_report_files(tiny_model_dir, labelled_folder, tmp_path):
    out = tmp_path / "report"
    result = run("eval", labelled_folder, "-m", tiny_model_dir, "-t", "photo", "--report", out)
    assert result.exit_code == 0, result.stderr
    assert "acc1" in result.stdout and "skipped 1 unreadable file (not counted)" in result.stderr
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["images"] == 21 and summary["skipped"] == 1 and summary["templates"] == "photo"
    assert set(summary["metrics"]) == {"acc1", "mean_per_class_recall"}  # 3 classes: no acc5
    assert summary["fingerprint"].startswith("local-dir@sha256:")

    preds = list(csv.DictReader(open(out / "predictions.csv")))
    assert len(preds) == 21 and not any(p["path"].endswith("broken.png") for p in preds)
    names = ["blue thing", "green thing", "red thing"]
    y_true = [names.index(p["true"]) for p in preds]
    y_pred = [names.index(p["predicted"]) for p in preds]
    assert summary["metrics"]["acc1"] == pytest.approx(np.mean(np.array(y_true) == np.array(y_pred)))

    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=[0, 1, 2], zero_division=0)
    rows = list(csv.DictReader(open(out / "per_class.csv")))
    assert [float(r["recall"]) for r in rows] == pytest.approx(recall, abs=1e-4)
    assert [float(r["precision"]) for r in rows] == pytest.approx(precision, abs=1e-4)
    assert [float(r["f1"]) for r in rows] == pytest.approx(f1, abs=1e-4)
    assert [int(r["support"]) for r in rows] == support.tolist()

    cm_rows = list(csv.reader(open(out / "confusion_matrix.csv")))
    assert cm_rows[0][1:] == names and [r[0] for r in cm_rows[1:]] == names
    assert [[int(v) for v in r[1:]] for r in cm_rows[1:]] == confusion_matrix(y_true, y_pred).tolist()

    assert Image.open(out / "confusion_matrix.png").size[0] > 300
    page = (out / "report.html").read_text()
    assert "data:image/png;base64," in page and "broken.png" in page and "acc1" in page
    skipped = list(csv.DictReader(open(out / "skipped.csv")))
    assert [Path(r["path"]).name for r in skipped] == ["broken.png"]


def test_json_format_and_limit(tiny_model_dir, labelled_folder):
    result = run("eval", labelled_folder, "-m", tiny_model_dir, "-t", "photo", "--limit", "6", "-f", "json")
    summary = json.loads(result.stdout)
    assert summary["images"] == 6  # stratified: two per class
    assert summary["num_classes"] == 3


def test_stratified_limit_takes_classes_in_turn():
    d = datasets.EvalDataset("x", ["a", "b", "c"], [(f"{i}", i % 3 if i < 30 else 0) for i in range(60)])
    picked = d.limit(9)
    assert sorted(label for _, label in picked.items) == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_named_data_set_offline_is_one_line_exit_1(monkeypatch, tiny_model_dir, tmp_path):
    remote = datasets.NAMED["cifar10"]
    monkeypatch.setitem(
        datasets.NAMED, "cifar10", datasets.Remote("http://127.0.0.1:9/c.tgz", 1, "md5:0", remote.folder, remote.layout)
    )
    result = run("eval", "cifar10", "-m", tiny_model_dir)
    assert result.exit_code == 1
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1
    assert "cannot download http://127.0.0.1:9/c.tgz" in line and "--root" in line and "cifar-10-batches-py" in line
    missing = run("eval", "imagenet-v2", "-m", tiny_model_dir, "--root", tmp_path)
    assert missing.exit_code == 1 and "imagenetv2-matched-frequency-format-val/<0..999>" in missing.stderr


def test_cifar10_in_torchvision_format(tiny_model_dir, tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(1)
    labels = [i % 10 for i in range(30)]
    data = rng.integers(0, 255, (30, 3 * 32 * 32), dtype=np.uint8)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": data, "labels": labels}, f)
    d = datasets.load_dataset("cifar10", root=str(tmp_path))
    assert d.classnames[:3] == ["airplane", "automobile", "bird"] and d.templates == "cifar10"
    assert [label for _, label in d.items] == labels
    first = np.asarray(Image.open(d.items[0][0]))
    assert (first == data[0].reshape(3, 32, 32).transpose(1, 2, 0)).all()
    result = run("eval", "cifar10", "--root", tmp_path, "-m", tiny_model_dir, "-f", "json")
    summary = json.loads(result.stdout)
    assert summary["templates"] == "cifar10" and summary["images"] == 30 and "acc5" in summary["metrics"]


def test_imagenet_v2_layout(tiny_model_dir, tmp_path):
    base = tmp_path / "imagenetv2-matched-frequency-format-val"
    for label in (0, 1, 999):
        (base / str(label)).mkdir(parents=True)
        Image.new("RGB", (40, 40), (label % 255, 10, 10)).save(base / str(label) / "a.jpeg")
    d = datasets.load_dataset("imagenet-v2", root=str(tmp_path))
    assert len(d.classnames) == 1000 and d.classnames[0] == "tench" and d.templates == "imagenet80"
    assert [label for _, label in d.items] == [0, 1, 999]


def test_csv_data_set(tmp_path, labelled_folder):
    listing = tmp_path / "labels.csv"
    rows = [(str(p), p.parent.name) for p in sorted(labelled_folder.glob("*/[0-3].png"))]
    listing.write_text("path,label\n" + "\n".join(f"{p},{lab}" for p, lab in rows))
    d = datasets.load_dataset(f"csv:{listing}")
    assert d.classnames == ["blue_thing", "green_thing", "red_thing"] and len(d.items) == 12


def test_real_imagenet_samples_with_classes_tsv():
    root = SHARED_DATA / "imagenet-samples"
    if not root.is_dir():
        pytest.skip("../shared/data is missing")
    d = datasets.load_dataset(str(root))
    assert len(d.items) == 1000 and d.classnames[:2] == ["tench", "goldfish"]
    assert any("repeated class names" in n for n in d.notes)
    assert d.items[1][1] == 1


def test_prompts_list_and_show():
    listed = run("prompts", "list").stdout.splitlines()
    assert "imagenet80\t80\tThe CLIP paper's 80 ImageNet templates (open_clip OPENAI_IMAGENET_TEMPLATES)." in listed
    shown = run("prompts", "show", "imagenet7", "--class", "fox").stdout.splitlines()
    assert shown[0] == "itap of a fox." and len(shown) == 7
    assert run("prompts", "show", "nope").exit_code == 2


def test_prompts_compare_encodes_images_once(tmp_path, monkeypatch):
    from zsclip.datasets.shapes import write_dataset

    write_dataset(tmp_path / "s", n=1, seed=9, eval_per_class=2)
    model = zsclip.load_model("shapes")
    calls = []
    original = model.model.encode_image
    monkeypatch.setattr(model.model, "encode_image", lambda x: calls.append(len(x)) or original(x))
    embedded = embed_dataset(model, datasets.load_dataset(str(tmp_path / "s" / "eval")), ReadOptions(workers=0))
    from zsclip.evaluate.run import compare_templates

    comparison = compare_templates(model, embedded, ["photo", "shapes", "imagenet7"], per_template=True)
    assert sum(calls) == 72
    assert [r["acc1"] for r in comparison.rows] == sorted((r["acc1"] for r in comparison.rows), reverse=True)
    assert len(comparison.per_template) == 1 + 4 + 7 - 1  # "a photo of a {}." is in photo and shapes
    assert comparison.greedy and comparison.greedy[0]["acc1"] == max(r["acc1"] for r in comparison.per_template)


def test_prompts_compare_cli_on_the_shapes_eval_split(tmp_path):
    from zsclip.datasets.shapes import write_dataset

    write_dataset(tmp_path / "s", n=1, seed=9, eval_per_class=2)
    out = tmp_path / "cmp"
    result = run(
        "prompts",
        "compare",
        tmp_path / "s" / "eval",
        "--model",
        "shapes",
        "--sets",
        "photo,shapes,none",
        "--per-template",
        "--report",
        out,
    )
    assert result.exit_code == 0, result.stderr
    assert "greedy subset" in result.stdout and "shapes" in result.stdout
    rows = list(csv.DictReader(open(out / "compare.csv")))
    assert {r["set"] for r in rows} == {"photo", "shapes", "none"}
    data = json.loads((out / "compare.json").read_text())
    assert data["images"] == 72 and data["per_template"]
    assert Image.open(out / "compare.png").size[0] > 300


def test_unknown_data_set_is_a_usage_error(tiny_model_dir):
    result = run("eval", "imagenet-v3", "-m", tiny_model_dir)
    assert result.exit_code == 2 and "unknown data set 'imagenet-v3'" in result.stderr


@pytest.mark.slow
def test_clip_benchmark_acc1_matches_ours_if_installed(tiny_model_dir, labelled_folder):
    """The same local-dir model and ImageFolder data through CLIP_benchmark's own classifier and loop."""
    zc = pytest.importorskip("clip_benchmark.metrics.zeroshot_classification")
    import open_clip
    from torchvision.datasets import ImageFolder

    (labelled_folder / "red_thing" / "broken.png").unlink()  # ImageFolder would crash on it
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{tiny_model_dir}")
    model.eval()
    tokenizer = open_clip.get_tokenizer(f"local-dir:{tiny_model_dir}")
    data = ImageFolder(str(labelled_folder), transform=preprocess)
    names = [c.replace("_", " ") for c in data.classes]
    templates = zsclip.load_templates("imagenet7").templates
    as_c = [t.replace("{}", "{c}") for t in templates]  # CLIP_benchmark formats with c=
    classifier = zc.zero_shot_classifier(model, tokenizer, names, as_c, "cpu", amp=False)
    loader = torch.utils.data.DataLoader(data, batch_size=8)
    logits, target = zc.run_classification(model, classifier, loader, "cpu", amp=False)
    theirs = (logits.argmax(1) == target).float().mean().item()

    ours = evaluate(zsclip.load_model(str(tiny_model_dir)), str(labelled_folder), "imagenet7", workers=0)
    assert ours.metrics["acc1"] == pytest.approx(theirs)
    assert [data.samples[i][0] for i in range(len(data))] == ours.paths
    assert (logits.argmax(1).numpy() == ours.topk[:, 0]).all()
