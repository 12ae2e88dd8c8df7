"""CLIP_benchmark's webdataset data sets (zsclip.datasets.webdataset, zsclip.store.shards): shards read in place
through the same
decoding, skip rules and image-embedding store as files; the layout's class names, templates and splits; the hub
download's offline error and --root."""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import zsclip
from zsclip.core.errors import UsageError, ZsclipError
from zsclip.datasets import load_dataset
from zsclip.datasets import webdataset as wds
from zsclip.engines import ReadOptions, embed_stream
from zsclip.evaluate.run import evaluate
from zsclip.pipeline.images import load_image
from zsclip.store import shards

from .wds_data import encode, shapes_images, write_classification, write_retrieval, write_shards

CLASSES = [("red", "circle"), ("blue", "square"), ("green", "triangle"), ("yellow", "star")]
NAMES = [f"{c} {s}" for c, s in CLASSES]
FORMATS = ("webp", "png", "jpg")


@pytest.fixture(scope="module")
def labelled() -> list[tuple[bytes, str, int]]:
    """12 shapes images, 3 per class, in all three formats CLIP_benchmark writes."""
    return [(encode(im, FORMATS[i % 3]), FORMATS[i % 3], label) for i, (im, label) in
            enumerate(shapes_images(CLASSES, 3))]  # fmt: skip


@pytest.fixture
def shard_set(tmp_path, labelled) -> Path:
    return write_classification(tmp_path / "wds", labelled, NAMES)


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return zsclip.load_model(str(tiny_model_dir), device="cpu")


def _as_folder(root: Path, labelled) -> Path:
    """The same image bytes as files of an ImageFolder, in the shards' order."""
    for i, (data, suffix, label) in enumerate(labelled):
        folder = root / NAMES[label].replace(" ", "_")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"s{i:07d}.{suffix}").write_bytes(data)
    return root


def test_shards_score_exactly_as_the_same_images_in_a_folder(model, shard_set, labelled, tmp_path, private_cache):
    before = sorted(p.relative_to(shard_set) for p in shard_set.rglob("*"))
    ours = evaluate(model, f"wds:{shard_set}", "photo", workers=0)
    folder = evaluate(model, str(_as_folder(tmp_path / "folder", labelled)), "photo", workers=0, store=False)
    assert len(ours.paths) == 12 and ours.paths[0] == f"{shard_set / 'test' / '0.tar'}#s0000000.webp"
    assert ours.labels.tolist() == [label for _, _, label in labelled]
    order = np.argsort([Path(p).name for p in folder.paths])  # the folder is walked class by class
    named = lambda result: np.array(result.classifier.classnames)[result.topk]  # noqa: E731 (folders sort by name)
    assert (named(ours) == named(folder)[order]).all()
    assert ours.metrics == pytest.approx(folder.metrics)
    # read in place: nothing unpacked next to the shards or into the cache (which holds the SQLite store only)
    assert sorted(p.relative_to(shard_set) for p in shard_set.rglob("*")) == before
    assert not [p for p in private_cache.rglob("*") if p.suffix in (".webp", ".png", ".jpg", ".tar")]


def test_the_data_sets_own_templates_are_the_default(model, shard_set):
    result = evaluate(model, f"wds:{shard_set}", workers=0)
    assert result.classifier.templates.templates == ("a photo of a {c}.", "a drawing of a {c}.")
    assert result.classifier.classnames == NAMES
    other = evaluate(model, f"wds:{shard_set}", "photo", workers=0)
    assert other.classifier.templates.name == "photo"


def test_a_rerun_encodes_nothing_even_from_a_copy_or_a_touched_shard(model, shard_set, tmp_path):
    from zsclip.evaluate.run import embed_dataset

    first = embed_dataset(model, load_dataset(f"wds:{shard_set}"), ReadOptions(workers=0))
    assert first.reused == 0
    again = evaluate(model, f"wds:{shard_set}", "shapes", workers=0)  # other templates: no image encoded
    assert len(again.paths) == 12
    assert embed_dataset(model, load_dataset(f"wds:{shard_set}"), ReadOptions(workers=0)).reused == 12
    copy = shutil.copytree(shard_set, tmp_path / "copy")
    os.utime(copy / "test" / "1.tar", ns=(1, 1))  # another stat identity: found by the members' content
    moved = embed_dataset(model, load_dataset(f"wds:{copy}"), ReadOptions(workers=0))
    assert moved.reused == 12 and np.array_equal(moved.features, first.features)


def test_worker_processes_and_the_device_reader_read_members_like_the_main_process(model, shard_set):
    sources = [(p, True) for p, _ in load_dataset(f"wds:{shard_set}").items]

    def vectors(**options):
        batches = list(embed_stream(model, sources, ReadOptions(batch_size=4, store=False, **options)))
        assert not [s for b in batches for s in b.skipped]
        return [p for b in batches for p in b.paths], np.concatenate([b.features for b in batches])

    paths, reference = vectors(workers=0)
    in_processes = vectors(workers=2)
    assert in_processes[0] == paths and np.array_equal(in_processes[1], reference)
    on_device = vectors(workers=0, decode_on="device")  # JPEGs decoded by torchvision, resized by torch
    assert on_device[0] == paths and np.allclose(on_device[1], reference, atol=0.05)


def test_bad_samples_are_skipped_with_their_shard_and_key(model, tmp_path, labelled):
    good = [{suffix: data, "cls": str(label).encode()} for data, suffix, label in labelled[:6]]
    good[2]["png"] = b"\x89PNG\r\n\x1a\n not really"  # damaged image bytes
    good.append({"cls": b"1"})  # no image at all
    good.append({"webp": labelled[0][0], "cls": b"cat"})  # no class index
    good.append({"cls": b"0", "png": encode(Image.new("RGB", (64, 64), "red"), "png")})  # to be cut short
    root = tmp_path / "wds"
    shard0, _, shard2 = write_shards(root / "test", good, per_shard=4)
    (root / "classnames.txt").write_text("\n".join(NAMES) + "\n")
    data = shard2.read_bytes()
    shard2.write_bytes(data[: 3 * 512 + 40])  # the class, the image's header and its first bytes
    dataset = load_dataset(f"wds:{root}")
    notes = " | ".join(dataset.notes)
    assert "no image" in notes and "sample s0000006 of shard test/1.tar" in notes
    assert "no class index" in notes and "s0000007" in notes
    result = evaluate(model, dataset, "photo", workers=0)
    reasons = dict(result.skipped)
    bad = f"{shard0}#s0000002.png"
    assert reasons[bad] == f"sample s0000002 of shard {shard0}: not a recognised image format"
    cut = reasons[f"{shard2}#s0000008.png"]
    assert cut.startswith(f"sample s0000008 of shard {shard2}: truncated: the shard ends ")
    assert len(result.paths) == 5 and len(result.skipped) == 2 and len(dataset.items) == 7


def test_a_member_address_decodes_like_the_file_with_its_bytes(model, tmp_path, labelled):
    data, suffix, _ = labelled[1]
    (shard,) = write_shards(tmp_path / "t", [{suffix: data}], per_shard=1)
    (tmp_path / f"x.{suffix}").write_bytes(data)
    address = shards.member_address(shard, f"s0000000.{suffix}")
    as_file = load_image(str(tmp_path / f"x.{suffix}"), model.preprocess.geometry)
    assert np.array_equal(load_image(address, model.preprocess.geometry), as_file)
    with Image.open(shards.image_source(address)) as im:
        assert im.size == (64, 64)
    with pytest.raises(Exception, match="sample s0000009 of shard .*no member 's0000009.png'"):
        load_image(shards.member_address(shard, "s0000009.png"), model.preprocess.geometry)
    # a real file whose name holds '.tar#' is a file, not an address
    odd = tmp_path / f"odd.tar#x.{suffix}"
    odd.write_bytes(data)
    assert load_image(str(odd), model.preprocess.geometry).shape == (64, 64, 3)


def test_splits_and_a_broken_layout_are_one_line_errors(tmp_path, labelled):
    root = write_classification(tmp_path / "wds", labelled[:4], NAMES, split="train", per_shard=2)
    with pytest.raises(UsageError, match=r"no split 'test' .*its splits: train \(--split\)"):
        load_dataset(f"wds:{root}")
    assert len(load_dataset(f"wds:{root}", split="train").items) == 4
    (root / "train" / "nshards.txt").write_text("3\n")
    with pytest.raises(UsageError, match=r"train/2.tar is missing \(train/nshards.txt lists 3 shards, 1 missing\)"):
        load_dataset(f"wds:{root}", split="train")
    (root / "train" / "nshards.txt").write_text("2\n")
    (root / "classnames.txt").unlink()
    with pytest.raises(UsageError, match="classnames.txt is missing"):
        load_dataset(f"wds:{root}", split="train")
    assert load_dataset(f"wds:{root}", split="train", classnames="shapes").classnames[0] == "red circle"
    with pytest.raises(UsageError, match="no such folder"):
        load_dataset(f"wds:{tmp_path / 'nonesuch'}")
    with pytest.raises(UsageError, match="only wds:DIR and wds/NAME data sets have splits"):
        load_dataset(str(tmp_path), split="train")
    (root / "train" / "0.tar").write_bytes(b"")  # not a tar at all: noted, nothing to score
    (root / "classnames.txt").write_text("a\nb\nc\nd\n")
    data = load_dataset(f"wds:{root}", split="train")
    assert any("shard train/0.tar is not a readable tar file" in n for n in data.notes)


def test_a_class_index_out_of_range_names_the_sample(tmp_path, labelled):
    root = write_classification(tmp_path / "wds", [(labelled[0][0], "webp", 7)], NAMES)
    with pytest.raises(UsageError, match=r"sample s0000000 of shard test/0.tar has class 7, out of range: there are 4"):
        load_dataset(f"wds:{root}")


def test_a_retrieval_set_gives_each_image_its_captions(tmp_path, labelled):
    captioned = [(data, suffix, [f"picture {i}", f"another caption {i}"]) for i, (data, suffix, _) in
                 enumerate(labelled[:7])]  # fmt: skip
    root = write_retrieval(tmp_path / "coco", captioned, per_shard=3)
    data = wds.load_wds(f"wds:{root}")
    assert isinstance(data, wds.RetrievalSet)
    assert [caps for _, caps in data.items] == [caps for _, _, caps in captioned]
    assert data.images[3] == f"{root / 'test' / '1.tar'}#s0000003.{captioned[3][1]}"
    assert data.captions[:3] == ["picture 0", "another caption 0", "picture 1"]
    assert data.caption_image[:4] == [0, 0, 1, 1]
    assert all(load_image(p, lambda im: torch.zeros(1)) is not None for p in data.images)
    with pytest.raises(UsageError, match="a retrieval data set"):
        load_dataset(f"wds:{root}")
    with pytest.raises(UsageError, match="classnames.txt is missing"):
        wds.load_wds(f"wds:{root}", task="classification")
    assert len(data.limit(2).items) == 2


def test_the_reader_finds_the_samples_webdataset_finds(tmp_path, labelled):
    """webdataset itself (what CLIP_benchmark reads shards with) is the reference for grouping and labels."""
    webdataset = pytest.importorskip("webdataset")
    root = write_classification(tmp_path / "wds", labelled, NAMES, per_shard=5)
    urls = [str(root / "test" / f"{i}.tar") for i in range(3)]
    theirs = list(webdataset.WebDataset(urls, shardshuffle=False).to_tuple("__key__", "webp;png;jpg;jpeg", "cls"))
    ours = load_dataset(f"wds:{root}").items
    assert [int(cls) for _, _, cls in theirs] == [label for _, label in ours]
    assert [image for _, image, _ in theirs] == [shards.read_member(*shards.split_member(p)) for p, _ in ours]


def test_offline_a_hub_data_set_is_a_one_line_error_naming_the_url_and_root(hf_cache):
    start = time.perf_counter()
    with pytest.raises(ZsclipError) as info:
        load_dataset("wds/vtab/flowers")
    message = str(info.value)
    assert time.perf_counter() - start < 20
    assert "\n" not in message and not isinstance(info.value, UsageError)
    assert "cannot download http://127.0.0.1:9/datasets/clip-benchmark/wds_vtab-flowers" in message
    assert "--root DIR with DIR/test/nshards.txt" in message and "Connection refused" in message


def test_root_uses_an_existing_copy_and_a_finished_download_is_not_fetched_again(
    hf_cache, tmp_path, labelled, monkeypatch, private_cache
):
    copy = write_classification(tmp_path / "copies" / "wds_cifar10", labelled[:4], NAMES)
    assert len(load_dataset("wds/cifar10", root=str(tmp_path / "copies")).items) == 4
    assert len(load_dataset("wds/cifar10", root=str(copy)).items) == 4
    with pytest.raises(UsageError, match="wds/cifar10: not found under --root"):
        load_dataset("wds/cifar10", root=str(tmp_path))

    calls = []

    def fake_download(repo_id, *, repo_type, local_dir, allow_patterns):
        calls.append((repo_id, repo_type, allow_patterns))
        shutil.copytree(copy, local_dir, dirs_exist_ok=True)
        return str(local_dir)

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    first = load_dataset("wds/cifar10")
    assert calls == [("clip-benchmark/wds_cifar10", "dataset", ["test/*", "*.txt"])]
    assert first.source == str(private_cache / "datasets" / "wds" / "cifar10")
    monkeypatch.undo()  # the hub is unreachable again (hf_cache): the finished copy is used as it is
    monkeypatch.setenv("ZSCLIP_CACHE_DIR", str(private_cache))
    assert load_dataset("wds/cifar10").items == first.items


def test_store_keys_a_member_by_its_address_and_content(tmp_path, labelled):
    from zsclip.store.cache import Cache
    from zsclip.store.embeddings import ImageStore, content_hash

    data, suffix, _ = labelled[0]
    (shard,) = write_shards(tmp_path / "t", [{suffix: data}], per_shard=1)
    (tmp_path / f"x.{suffix}").write_bytes(data)
    store = ImageStore.open(Cache(), "fp", "v")
    vector, identity = store.lookup(shards.member_address(shard, f"s0000000.{suffix}"))
    assert vector is None and identity.path == f"{shard}#s0000000.{suffix}" and identity.size == len(data)
    assert identity.content_hash == content_hash(str(tmp_path / f"x.{suffix}"))
    store.put([(identity, np.ones(4, np.float32))])
    again, fresh = store.lookup(shards.member_address(shard, f"s0000000.{suffix}"))
    assert fresh is None and again.tolist() == [1, 1, 1, 1]
    # the same bytes as a plain file are found by their hash
    same, _ = store.lookup(str(tmp_path / f"x.{suffix}"))
    assert same is not None


@pytest.mark.slow
def test_metrics_equal_clip_benchmarks_on_the_same_shards_and_model(tiny_model_dir, tmp_path, labelled):
    """CLIP_benchmark's own wds reader, classifier and loop on our shards, against `zsclip.evaluate`."""
    pytest.importorskip("webdataset")
    builder = pytest.importorskip("clip_benchmark.datasets.builder")
    zc = pytest.importorskip("clip_benchmark.metrics.zeroshot_classification")
    import open_clip

    root = write_classification(tmp_path / "wds", labelled, NAMES, per_shard=5)
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{tiny_model_dir}")
    model.eval()
    tokenizer = open_clip.get_tokenizer(f"local-dir:{tiny_model_dir}")
    data = builder.build_wds_dataset("test", preprocess, split="test", data_dir=str(root))
    loader = torch.utils.data.DataLoader(data.batched(4), batch_size=None, num_workers=0)
    classifier = zc.zero_shot_classifier(model, tokenizer, data.classes, data.templates, "cpu", amp=False)
    logits, target = zc.run_classification(model, classifier, loader, "cpu", amp=False)
    pred = logits.topk(min(5, len(NAMES)), 1)[1]

    ours = evaluate(zsclip.load_model(str(tiny_model_dir), device="cpu"), f"wds:{root}", workers=0)
    assert ours.labels.tolist() == target.tolist()
    assert (ours.topk == pred.numpy()).all()
    assert ours.metrics["acc1"] == pytest.approx((pred[:, 0] == target).float().mean().item())
    # balanced accuracy, as CLIP_benchmark's mean_per_class_recall
    recall = [(pred[target == c, 0] == c).float().mean().item() for c in target.unique()]
    assert ours.metrics["mean_per_class_recall"] == pytest.approx(float(np.mean(recall)))


@pytest.mark.slow
def test_retrieval_samples_equal_clip_benchmarks(tmp_path, labelled):
    pytest.importorskip("webdataset")
    builder = pytest.importorskip("clip_benchmark.datasets.builder")
    captioned = [(data, suffix, [f"a {i}", f"b {i}"]) for i, (data, suffix, _) in enumerate(labelled)]
    root = write_retrieval(tmp_path / "flickr", captioned, per_shard=5)
    data = builder.build_wds_dataset("flickr", lambda im: np.asarray(im.convert("RGB")), data_dir=str(root))
    theirs = list(data)
    ours = wds.load_wds(f"wds:{root}")
    assert [caps for _, caps in theirs] == [caps for _, caps in ours.items]
    for (pixels, _), (address, _) in zip(theirs, ours.items, strict=True):
        with Image.open(io.BytesIO(shards.read_member(*shards.split_member(address)))) as im:
            assert (np.asarray(im.convert("RGB")) == pixels).all()


def test_an_unreadable_shard_is_a_one_line_error(shard_set, monkeypatch):
    def denied(shard):
        if shard.endswith("1.tar"):
            raise PermissionError(13, "Permission denied")  # what a chmod 0 shard gives a user who is not root
        return shards.shard_index(shard)

    monkeypatch.setattr(wds, "shard_index", denied)
    with pytest.raises(ZsclipError, match=r"cannot read shard test/1.tar \(Permission denied\)"):
        load_dataset(f"wds:{shard_set}")


def test_a_shard_cut_at_a_member_boundary_is_said_to_end_early(tmp_path, labelled):
    """Issue 21 item 10: tarfile reads a shard cut between members as complete; the eval then scored part of the
    data set as if it were whole, and the only note blamed '1 samples with no class index'."""
    root = write_classification(tmp_path / "wds", labelled, NAMES, per_shard=6)
    shard = root / "test" / "0.tar"
    with tarfile.open(shard) as tar:
        members = tar.getmembers()
    cut = members[7]  # the .cls member of the fourth sample: the file ends right after its image
    shard.write_bytes(shard.read_bytes()[: cut.offset])
    data = load_dataset(f"wds:{root}")
    assert len(data.items) == len(labelled) - 6 + 3
    notes = " ".join(data.notes)
    assert "shard test/0.tar ends early" in notes and "not the whole data set" in notes
    assert "is cut off by its end" in notes and "no class index" not in notes
    whole = write_classification(tmp_path / "whole", labelled, NAMES, per_shard=6)
    assert not any("ends early" in n for n in load_dataset(f"wds:{whole}").notes)


def test_a_sample_key_repeated_by_an_appended_shard_keeps_both_samples_as_webdataset_does(tmp_path, labelled):
    """Issue 21 item 10: a shard appended to with `tar -r` repeats a key; the index kept the later member only and
    dropped the earlier sample."""
    webdataset = pytest.importorskip("webdataset")
    root = write_classification(tmp_path / "wds", labelled[:4], NAMES, per_shard=4)
    shard = root / "test" / "0.tar"
    extra_image, extra_suffix, _ = next(x for x in labelled[4:] if x[1] == labelled[0][1])
    with tarfile.open(shard, "a") as tar:  # what `tar -rf 0.tar s0000000.webp s0000000.cls` does
        for suffix, data in ((extra_suffix, extra_image), ("cls", b"1")):
            info = tarfile.TarInfo(f"s0000000.{suffix}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    theirs = list(
        webdataset.WebDataset([str(shard)], shardshuffle=False).to_tuple("__key__", "webp;png;jpg;jpeg", "cls")
    )
    ours = load_dataset(f"wds:{root}").items
    assert len(ours) == len(theirs) == 5
    assert [int(cls) for _, _, cls in theirs] == [label for _, label in ours]
    assert [image for _, image, _ in theirs] == [shards.read_member(*shards.split_member(p)) for p, _ in ours]
    assert ours[-1][0].endswith("#2")  # the second s0000000 sample has an address of its own
    assert load_image(ours[-1][0], lambda im: torch.zeros(1)) is not None
