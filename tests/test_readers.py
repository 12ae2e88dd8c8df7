"""The readers of a user's text files (class lists, classes.tsv, csv: data sets, @lists, captions) and the class
list rules they feed (issue 12: items 7, 8, 11, 12, 15, 16, 23, 24, 25, 27). Each test failed before its fix."""

import json
import os
from pathlib import Path

import pytest
from PIL import Image

import zsclip
from zsclip.classify.predict import check_options, classify
from zsclip.core.errors import UsageError
from zsclip.datasets import load_dataset
from zsclip.datasets.shapes import COMPOSITIONS, write_dataset
from zsclip.engines import ReadOptions
from zsclip.pipeline.sources import expand_sources, walk
from zsclip.train import read_captions
from zsclip.zeroshot.classifier import build_classifier
from zsclip.zeroshot.prompts import load_templates, read_classes_file

from .conftest import SHARED_DATA


def _png(path: Path, rgb=(200, 30, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), rgb).save(path)
    return path


def _one_line_usage_error(call, match: str) -> str:
    with pytest.raises(UsageError, match=match) as info:
        call()
    message = str(info.value)
    assert len(message.splitlines()) == 1
    return message


# -- 7: malformed data-set files ---------------------------------------------------------------------------
def test_csv_row_without_label_names_file_and_line(tmp_path):
    f = tmp_path / "labels.csv"
    f.write_text("path,label\na.png,cat\nb.png\n")
    _one_line_usage_error(lambda: load_dataset(f"csv:{f}"), r"csv:.*labels.csv, line 3: no label for 'b.png'")


def test_csv_label_out_of_range_is_an_error_not_0_percent(tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("cat\ndog\nbird\n")
    f = tmp_path / "labels.csv"
    f.write_text("path,label\na.png,0\nb.png,2\nc.png,3\n")
    _one_line_usage_error(
        lambda: load_dataset(f"csv:{f}", classnames=str(names)),
        r"labels.csv, line 4: label 3 is out of range: --classnames .*names.txt has 3 classes \(0..2\)",
    )
    f.write_text("path,label\na.png,0\nb.png,frog\n")
    _one_line_usage_error(lambda: load_dataset(f"csv:{f}", classnames=str(names)), "line 3: label 'frog' is not in")


def _folder_with_tsv(root: Path, tsv: str, folders=("a", "b")) -> Path:
    for i, name in enumerate(folders):
        _png(root / name / "x.png", (i * 90, 0, 0))
    (root / "classes.tsv").write_text(tsv)
    return root


@pytest.mark.parametrize(
    ("tsv", "message"),
    [
        ("index\tfolder\tname\n0\ta\tcat\nx\tb\tdog\n", r"classes.tsv, line 3: column 'index' holds 'x', not a whole"),
        ("", r"classes.tsv: holds no class names"),
        ("\n\n", r"classes.tsv: holds no class names"),
        ("index\tfolder\tname\n0\ta\tcat\n1\tb\n", r"classes.tsv, line 3: 2 columns where line 1 has 3"),
        ("index\tfolder\tname\n0\ta\tcat\n0\tb\tdog\n", r"classes.tsv, line 3: index 0 is on line 2 already"),
        ("index\tfolder\tname\n0\ta\tcat\n1\tc\tdog\n", r"classes.tsv: folder 'c' is not under"),
        ("index\tfolder\tname\n0\ta\tcat\n1\tb\t \n", r"classes.tsv, line 3: empty class name"),
    ],
)
def test_a_malformed_classes_tsv_is_one_line_naming_it_not_classes_file(tmp_path, tsv, message):
    root = _folder_with_tsv(tmp_path / "d", tsv)
    text = _one_line_usage_error(lambda: load_dataset(str(root)), message)
    assert "--classes-file" not in text  # none was given


# -- 8: encodings ------------------------------------------------------------------------------------------
def test_latin1_captions_are_a_one_line_error_naming_the_line(tmp_path):
    _png(tmp_path / "a.png")
    (tmp_path / "captions.csv").write_bytes(
        "filepath,caption\na.png,a red thing\na.png,un café rouge\n".encode("latin-1")
    )
    _one_line_usage_error(
        lambda: read_captions(tmp_path), r"captions.csv, line 3: not UTF-8 text \(byte 0xe9 at column 13\); save it"
    )


def test_a_byte_order_mark_is_read_past_everywhere(tmp_path):
    bom = b"\xef\xbb\xbf"
    a = _png(tmp_path / "imgs" / "a.png")
    _png(tmp_path / "imgs" / "b.png", (0, 0, 200))
    listing = tmp_path / "list.txt"
    listing.write_bytes(bom + f"{a}\n".encode())
    assert expand_sources([f"@{listing}"]) == [(str(a), True)]
    labels = tmp_path / "labels.csv"
    labels.write_bytes(bom + b"path,label\nimgs/a.png,red\nimgs/b.png,blue\n")
    assert load_dataset(f"csv:{labels}").classnames == ["blue", "red"]
    (tmp_path / "captions.csv").write_bytes(bom + b"filepath,caption\nimgs/a.png,a red square\n")
    assert read_captions(tmp_path)[1] == [(str(tmp_path / "imgs" / "a.png"), "a red square")]
    tsv = tmp_path / "imgs" / "classes.tsv"
    tsv.write_bytes(bom + b"index\tname\n1\tblue\n0\tred\n")
    assert read_classes_file(tsv) == ["red", "blue"]


def test_a_latin1_class_file_names_the_line(tmp_path):
    f = tmp_path / "c.txt"
    f.write_bytes("cat\ndog\nbœuf\n".encode("cp1252"))
    _one_line_usage_error(lambda: read_classes_file(f), r"c.txt, line 3: not UTF-8 text \(byte 0x9c at column 2\)")


def test_a_list_file_keeps_names_that_are_not_utf8(tmp_path):
    # File names on Linux are bytes: an @list written by `find` may hold Latin-1 names, which must still be found.
    name = os.path.join(os.fsencode(tmp_path), b"caf\xe9.png")
    Image.new("RGB", (8, 8)).save(os.fsdecode(name), format="PNG")
    listing = tmp_path / "list.txt"
    listing.write_bytes(name + b"\n")
    [(path, explicit)] = expand_sources([f"@{listing}"])
    assert os.fsencode(path) == name and os.path.isfile(path) and explicit


# -- 11, 12: which folder holds which class ----------------------------------------------------------------
def test_shapes_eval_with_the_shapes_class_list_matches_folders_by_name(tmp_path):
    write_dataset(tmp_path / "s", n=1, eval_per_class=1)
    d = load_dataset(str(tmp_path / "s" / "eval"), classnames="shapes")
    assert len(d.items) == len(COMPOSITIONS) == len(d.classnames)
    # Before: the colour-ordered list was given to the sorted folders by position (2.78% instead of 100%).
    assert all(Path(p).parent.name == d.classnames[label] for p, label in d.items)


def test_folders_named_like_classes_in_another_spelling_match_by_name(tmp_path):
    for folder in ("Golden_Retriever", "tabby  cat", "zebra"):
        _png(tmp_path / "d" / folder / "x.png")
    names = tmp_path / "names.txt"
    names.write_text("zebra\ngolden retriever\ntabby cat\n")
    d = load_dataset(str(tmp_path / "d"), classnames=str(names))
    assert {Path(p).parent.name: d.classnames[label] for p, label in d.items} == {
        "Golden_Retriever": "golden retriever",
        "tabby  cat": "tabby cat",
        "zebra": "zebra",
    }


def test_a_folder_matching_no_class_while_others_do_is_an_error(tmp_path):
    for folder in ("cat", "dgo"):
        _png(tmp_path / "d" / folder / "x.png")
    names = tmp_path / "names.txt"
    names.write_text("cat\ndog\n")
    _one_line_usage_error(
        lambda: load_dataset(str(tmp_path / "d"), classnames=str(names)), "folder 'dgo' matches no class name"
    )


def test_numbered_folders_take_names_by_number_not_by_string_order(tmp_path):
    for i in range(12):
        _png(tmp_path / "d" / str(i) / "x.png")
    names = tmp_path / "names.txt"
    names.write_text("".join(f"class {i}\n" for i in range(12)))
    d = load_dataset(str(tmp_path / "d"), classnames=str(names))
    assert all(d.classnames[label] == f"class {Path(p).parent.name}" for p, label in d.items)
    assert any("by position, in numeric order" in n for n in d.notes)


@pytest.mark.parametrize("column", ["index", "idx", "id", "class_index", "label_index", "ID"])
def test_every_index_column_orders_names_and_folders_alike(tmp_path, column):
    tsv = f"{column}\tfolder\tname\n2\tfa\talpha\n0\tfb\tbeta\n1\tfc\tgamma\n"
    root = _folder_with_tsv(tmp_path / "d", tsv, folders=("fa", "fb", "fc"))
    d = load_dataset(str(root))
    assert d.classnames == ["beta", "gamma", "alpha"]
    assert {Path(p).parent.name: d.classnames[label] for p, label in d.items} == {
        "fa": "alpha",
        "fb": "beta",
        "fc": "gamma",
    }


# -- 15: a one-column class table's header -----------------------------------------------------------------
@pytest.mark.parametrize("header", ["name", "Name", "class", "label", "classname"])
def test_a_one_column_table_drops_its_header(tmp_path, header):
    f = tmp_path / "c.csv"
    f.write_text(f"{header}\ncat\ndog\n")
    assert read_classes_file(f) == ["cat", "dog"]


def test_a_class_name_with_an_unquoted_comma_is_named_by_line(tmp_path):
    f = tmp_path / "c.csv"
    f.write_text("name\ncat\nsea lion, seal\n")
    _one_line_usage_error(lambda: read_classes_file(f), "c.csv, line 3: 2 columns where line 1 has 1; quote names")


# -- 16: 'default' is a template set everywhere ------------------------------------------------------------
def test_default_resolves_in_load_templates_with_and_without_context():
    assert load_templates("default").templates == load_templates("imagenet80").templates
    assert load_templates("default", default="photo").name == "photo"


def test_compare_templates_accepts_default_as_the_data_sets_set(tmp_path, tiny_model_dir):
    from zsclip.evaluate.run import compare_templates, embed_dataset

    for i, folder in enumerate(("cat", "dog")):
        _png(tmp_path / "d" / folder / "x.png", (i * 200, 50, 50))
    model = zsclip.load_model(str(tiny_model_dir))
    embedded = embed_dataset(model, load_dataset(str(tmp_path / "d")), ReadOptions(workers=0))
    comparison = compare_templates(model, embedded, ["default", "photo", "none"])
    assert {r["set"] for r in comparison.rows} == {"default (imagenet80)", "photo", "none"}


# -- 23: folders in an @list -------------------------------------------------------------------------------
def test_a_folder_named_in_a_list_file_is_walked(tmp_path):
    a = _png(tmp_path / "imgs" / "a.png")
    b = _png(tmp_path / "imgs" / "sub" / "b.png")
    single = _png(tmp_path / "c.png")
    listing = tmp_path / "list.txt"
    listing.write_text(f"{tmp_path / 'imgs'}\n{single}\n{tmp_path / 'missing.png'}\n")
    assert [p for p, _ in walk(expand_sources([f"@{listing}"]))] == [
        str(a),
        str(b),
        str(single),
        str(tmp_path / "missing.png"),  # a missing entry stays, to become a skip record
    ]


# -- 24: zsclip data shapes over an existing folder --------------------------------------------------------
def test_writing_shapes_again_leaves_no_stale_file(tmp_path):
    out = tmp_path / "s"
    write_dataset(out, n=12, seed=1, eval_per_class=3)
    write_dataset(out, n=4, seed=2, eval_per_class=1)
    assert len(list((out / "images").iterdir())) == 4
    assert all(len(list(f.iterdir())) == 1 for f in (out / "eval").iterdir())
    assert len(load_dataset(str(out / "eval")).items) == len(COMPOSITIONS)


def test_shapes_refuses_a_folder_with_files_it_did_not_write(tmp_path):
    out = tmp_path / "s"
    write_dataset(out, n=2, eval_per_class=1)
    mine = _png(out / "eval" / "red circle" / "my-photo.png")
    _one_line_usage_error(lambda: write_dataset(out, n=2), "'eval/red circle/my-photo.png' was not written by zsclip")
    assert mine.is_file() and (out / "captions.csv").is_file()  # nothing deleted
    (tmp_path / "file").write_text("x")
    _one_line_usage_error(lambda: write_dataset(tmp_path / "file", n=2), "is a file")


# -- 25: repeated names, one rule for classify and eval ----------------------------------------------------
def test_real_imagenet_classes_file_is_accepted_by_classify_as_by_eval():
    tsv = SHARED_DATA / "imagenet-samples" / "classes.tsv"
    if not tsv.is_file():
        pytest.skip("../shared/data is missing")
    names = read_classes_file(tsv)
    assert len(names) == 1000 and names.count("missile") == 2 and names.count("sunglasses") == 2
    assert load_dataset(str(tsv.parent)).classnames == names


def test_repeated_names_are_labelled_apart_with_a_note(tiny_model_dir, tmp_path):
    model = zsclip.load_model(str(tiny_model_dir))
    clf = build_classifier(model, ["missile", "dog", "missile", "cat"], ["a photo of a {}."])
    assert clf.labels == ["missile", "dog", "missile (2)", "cat"]
    assert clf.notes and "'missile' as 'missile', 'missile (2)'" in clf.notes[0]
    _png(tmp_path / "a.png")
    [prediction] = classify(model, clf, tmp_path / "a.png", top_k=4, workers=0, store=False)
    assert sorted(r["label"] for r in prediction.top_k) == sorted(clf.labels)


# -- 27: names a user cannot tell apart in the output, or the model cannot ---------------------------------
def test_a_class_named_unknown_is_refused_with_threshold_only(tiny_model_dir):
    model = zsclip.load_model(str(tiny_model_dir))
    clf = build_classifier(model, ["cat", "Unknown"], ["a photo of a {}."])
    _one_line_usage_error(lambda: check_options(clf, None, 0.5), "class 'Unknown' reads like 'unknown'")
    assert check_options(clf, None, None) == 2


def test_names_differing_only_in_case_are_refused_when_the_tokenizer_ignores_case(tiny_model_dir):
    model = zsclip.load_model(str(tiny_model_dir))
    _one_line_usage_error(
        lambda: build_classifier(model, ["Cat", "dog", "cat"], ["a photo of a {}."]),
        "classes 'Cat' and 'cat' get the same text embedding.*differ only in letter case",
    )


def test_a_template_that_pushes_the_name_past_the_context_is_refused(tiny_model_dir):
    model = zsclip.load_model(str(tiny_model_dir))
    long = "a very " * 40 + "detailed photo of a {}."
    _one_line_usage_error(
        lambda: build_classifier(model, ["cat", "dog", "bird"], [long]),
        r"all 3 classes get the same text embedding.*longer than the model's text context \(77 tokens\)",
    )
    # A long template beside others is no tie: the ensemble still tells the classes apart.
    assert len(build_classifier(model, ["cat", "dog", "bird"], [long, "a photo of a {}."])) == 3


# -- the same class of defect in the other readers -----------------------------------------------------------
def test_train_config_file_is_read_like_every_other_text_file(tmp_path):
    from zsclip.train import _model_cfg

    cfg = {"embed_dim": 8, "vision_cfg": {"layers": 1}, "text_cfg": {"layers": 1}}
    f = tmp_path / "cfg.json"
    f.write_bytes(b"\xef\xbb\xbf" + json.dumps({"model_cfg": cfg}).encode())
    assert _model_cfg(str(f)) == cfg
    f.write_text("[1, 2]")
    _one_line_usage_error(lambda: _model_cfg(str(f)), "expected a JSON object")
    f.write_bytes('{"name": "café"}'.encode("latin-1"))
    _one_line_usage_error(lambda: _model_cfg(str(f)), r"--config .*cfg.json, line 1: not UTF-8 text")
