"""zsclip.evaluate(task="retrieval"): captions CSV loading, recall@K as CLIP_benchmark defines it (checked against
a brute-force computation and against CLIP_benchmark itself), ranks and the report."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import zsclip
from zsclip.core.errors import UsageError
from zsclip.datasets import load_captions
from zsclip.datasets.shapes import write_dataset
from zsclip.evaluate.recall import first_ranks, recall_metrics
from zsclip.evaluate.recall_report import write_retrieval_report


def _brute_force(img: np.ndarray, txt: np.ndarray, owner: np.ndarray, ks) -> dict:
    """The definitions, one query at a time, by full sort (no ties with random vectors)."""
    scores = txt @ img.T
    out = {}
    for k in ks:
        t2i = [owner[t] in np.argsort(-scores[t])[:k] for t in range(len(txt))]
        i2t = [any(owner[j] == i for j in np.argsort(-scores[:, i])[:k]) for i in range(len(img))]
        out[f"image_retrieval_recall@{k}"] = float(np.mean(t2i))
        out[f"text_retrieval_recall@{k}"] = float(np.mean(i2t))
    return out


def _random_problem(seed=0, images=40, per_image=(1, 2, 3, 5)):
    rng = np.random.default_rng(seed)
    img = rng.normal(size=(images, 16)).astype(np.float32)
    owner = np.concatenate([np.full(per_image[i % len(per_image)], i) for i in range(images)])
    txt = img[owner] + rng.normal(scale=1.2, size=(len(owner), 16)).astype(np.float32)  # noisy captions
    img /= np.linalg.norm(img, axis=1, keepdims=True)
    txt /= np.linalg.norm(txt, axis=1, keepdims=True)
    return img, txt, owner


def test_recall_matches_brute_force_with_several_captions_per_image():
    img, txt, owner = _random_problem()
    ks = [1, 2, 5, 10, 1000]  # 1000: more than there are items, every item counts
    got = recall_metrics(torch.from_numpy(img), torch.from_numpy(txt), owner, ks)
    assert got == pytest.approx(_brute_force(img, txt, owner, ks), abs=1e-6)
    assert got["image_retrieval_recall@1000"] == 1.0 and 0 < got["image_retrieval_recall@1"] < 1


def test_recall_matches_clip_benchmark_recall_at_k():
    zr = pytest.importorskip("clip_benchmark.metrics.zeroshot_retrieval")
    img, txt, owner = _random_problem(seed=3)
    scores = torch.from_numpy(txt) @ torch.from_numpy(img).T
    positive = torch.zeros_like(scores, dtype=torch.bool)
    positive[torch.arange(len(scores)), torch.from_numpy(owner)] = True
    ours = recall_metrics(torch.from_numpy(img), torch.from_numpy(txt), owner, [1, 5, 10])
    for k in (1, 5, 10):
        theirs_i = (zr.batchify(zr.recall_at_k, scores, positive, 7, "cpu", k=k) > 0).float().mean().item()
        theirs_t = (zr.batchify(zr.recall_at_k, scores.T, positive.T, 7, "cpu", k=k) > 0).float().mean().item()
        assert ours[f"image_retrieval_recall@{k}"] == theirs_i
        assert ours[f"text_retrieval_recall@{k}"] == theirs_t


def test_first_ranks_agree_with_recall():
    img, txt, owner = _random_problem(seed=5)
    t_rank, t_top, i_rank, i_top = first_ranks(torch.from_numpy(img), torch.from_numpy(txt), owner)
    m = recall_metrics(torch.from_numpy(img), torch.from_numpy(txt), owner, [1, 3, 7])
    for k in (1, 3, 7):
        assert np.mean(t_rank <= k) == pytest.approx(m[f"image_retrieval_recall@{k}"])
        assert np.mean(i_rank <= k) == pytest.approx(m[f"text_retrieval_recall@{k}"])
    scores = txt @ img.T
    assert t_top.tolist() == scores.argmax(1).tolist() and i_top.tolist() == scores.argmax(0).tolist()


def _captions_folder(root: Path) -> Path:
    """Six images with 1-3 captions each, one unreadable image, paths relative to the CSV."""
    (root / "img").mkdir(parents=True)
    colours = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 60, 220), "yellow": (240, 220, 30)}
    rows = []
    for i, (name, rgb) in enumerate([*colours.items(), ("dark", (20, 20, 20)), ("white", (250, 250, 250))]):
        arr = np.clip(np.array(rgb) + np.random.default_rng(i).normal(0, 20, (32, 32, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(arr).save(root / "img" / f"{name}.png")
        rows += [(f"img/{name}.png", c) for c in [f"a {name} square", f"something {name}", "a photo"][: 1 + i % 3]]
    (root / "img" / "broken.png").write_bytes(b"not a png")
    rows.append(("img/broken.png", "a broken file"))
    with open(root / "captions.csv", "w", newline="") as f:
        csv.writer(f).writerows([("filepath", "caption"), *rows])
    return root


def test_load_captions_from_a_folder_a_csv_or_csv_prefix(tmp_path):
    folder = _captions_folder(tmp_path / "data")
    for spec in (folder, folder / "captions.csv", f"csv:{folder / 'captions.csv'}"):
        data = load_captions(spec)
        assert len(data.images) == 7 and len(data.captions) == 13
        assert data.images[0] == str(folder / "img" / "red.png")
        assert [data.images[i] for i in data.caption_image[:3]] == [data.images[0], data.images[1], data.images[1]]
    (tmp_path / "bad.csv").write_text("path,label\na.png,x\n")
    with pytest.raises(UsageError, match="filepath and caption"):
        load_captions(tmp_path / "bad.csv")
    with pytest.raises(UsageError, match="no captions.csv"):
        load_captions(tmp_path)
    (tmp_path / "holes.csv").write_text("filepath,caption\na.png,\n")
    with pytest.raises(UsageError, match="line 2"):
        load_captions(tmp_path / "holes.csv")


def test_evaluate_retrieval_matches_brute_force_with_open_clip(tiny_model_dir, tmp_path):
    folder = _captions_folder(tmp_path / "data")
    model = zsclip.load_model(str(tiny_model_dir))
    result = zsclip.evaluate(model, str(folder), task="retrieval", recall_k=[1, 2, 5], workers=0)
    assert [Path(p).name for p, _ in result.skipped] == ["broken.png"]
    assert len(result.images) == 6 and len(result.captions) == 12  # the broken image's caption is dropped

    data = load_captions(folder)
    keep = [j for j, i in enumerate(data.caption_image) if not data.images[i].endswith("broken.png")]
    with torch.no_grad():
        pixels = torch.from_numpy(np.stack([model.preprocess(Image.open(p).convert("RGB")) for p in data.images[:6]]))
        img = torch.nn.functional.normalize(model.model.encode_image(pixels), dim=-1).numpy()
        tokens = torch.from_numpy(model.tokenizer([data.captions[j] for j in keep]))
        txt = torch.nn.functional.normalize(model.model.encode_text(tokens), dim=-1).numpy()
    owner = np.array([data.caption_image[j] for j in keep])
    assert result.metrics == pytest.approx(
        _brute_force(img, txt, owner, [1, 2, 5]), abs=1e-6
    )  # float32 means, as CLIP_benchmark

    again = zsclip.evaluate(model, f"csv:{folder / 'captions.csv'}", task="retrieval", recall_k=[1, 2, 5], workers=0)
    assert again.reused == 6 and again.metrics == result.metrics  # image store and text cache reused


def test_report_files(tiny_model_dir, tmp_path):
    folder = _captions_folder(tmp_path / "data")
    model = zsclip.load_model(str(tiny_model_dir))
    result = zsclip.evaluate(model, str(folder), task="retrieval", workers=0)
    summary = write_retrieval_report(result, tmp_path / "report", model)
    saved = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert saved == summary and saved["captions"] == 12 and saved["images"] == 6 and saved["skipped"] == 1
    assert set(saved["metrics"]) == {f"{d}_retrieval_recall@{k}" for d in ("image", "text") for k in (1, 5, 10)}
    with open(tmp_path / "report" / "ranks.csv", newline="") as f:
        ranks = list(csv.DictReader(f))
    assert len(ranks) == 12 + 6 and {r["direction"] for r in ranks} == {"text_to_image", "image_to_text"}
    t2i = [int(r["rank"]) for r in ranks if r["direction"] == "text_to_image"]
    assert np.mean(np.array(t2i) <= 1) == pytest.approx(saved["metrics"]["image_retrieval_recall@1"])
    page = (tmp_path / "report" / "report.html").read_text()
    assert "Worst captions" in page and "data:image/jpeg;base64," in page


def test_bad_recall_k_and_task(tiny_model_dir, tmp_path):
    model = zsclip.load_model(str(tiny_model_dir))
    folder = _captions_folder(tmp_path / "data")
    with pytest.raises(UsageError, match="--recall-k"):
        zsclip.evaluate(model, str(folder), task="retrieval", recall_k=[0, 5])
    with pytest.raises(UsageError, match="--task"):
        zsclip.evaluate(model, str(folder), task="detection")


@pytest.mark.slow
def test_same_numbers_as_clip_benchmark_evaluate_on_the_shapes_captions(tmp_path):
    """CLIP_benchmark's own zeroshot_retrieval.evaluate, fed the same model and data through a DataLoader."""
    zr = pytest.importorskip("clip_benchmark.metrics.zeroshot_retrieval")
    write_dataset(tmp_path, n=120, seed=3, eval_per_class=0)
    model = zsclip.load_model("shapes")
    ours = zsclip.evaluate(model, str(tmp_path), task="retrieval", workers=0, exact=True)
    data = load_captions(tmp_path)
    by_image: dict[int, list[str]] = {}
    for c, i in zip(data.captions, data.caption_image, strict=True):
        by_image.setdefault(i, []).append(c)

    class Pairs(torch.utils.data.Dataset):
        def __len__(self):
            return len(data.images)

        def __getitem__(self, i):
            return torch.from_numpy(model.preprocess(Image.open(data.images[i]).convert("RGB"))), by_image[i]

    loader = torch.utils.data.DataLoader(Pairs(), batch_size=32, collate_fn=lambda b: tuple(zip(*b, strict=True)))
    loader = ((torch.stack(x), list(y)) for x, y in loader)
    # zsclip's tokenizer gives NumPy ids (it runs without torch); CLIP_benchmark calls .to(device) on them
    tokenizer = lambda texts: torch.from_numpy(model.tokenizer(texts))  # noqa: E731
    theirs = zr.evaluate(model.model, loader, tokenizer, "cpu", amp=False, recall_k_list=[1, 5, 10])
    assert ours.metrics == pytest.approx(theirs, abs=1e-6)
