from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES

from zsclip.core.errors import UsageError
from zsclip.zeroshot.prompts import fill, list_template_sets, load_templates, parse_classes, read_classes_file

from .conftest import shared


def test_shipped_sets_equal_open_clips_lists():
    assert load_templates("imagenet80").templates == tuple(t("{}") for t in OPENAI_IMAGENET_TEMPLATES)
    assert load_templates("imagenet7").templates == tuple(t("{}") for t in SIMPLE_IMAGENET_TEMPLATES)
    assert len(load_templates("imagenet80").templates) == 80


def test_shipped_sets_are_listed_with_descriptions():
    sets = {s.name: s for s in list_template_sets()}
    assert {"imagenet80", "imagenet7", "cifar10", "cifar100", "photo", "none"} <= set(sets)
    assert all(s.description for s in sets.values())
    assert sets["photo"].templates == ("a photo of a {}.",)
    assert sets["none"].expand("tabby cat") == ["tabby cat"]
    # The CLIP repository's CIFAR sets: 18 templates, the same for both data sets.
    assert len(sets["cifar10"].templates) == 18 and sets["cifar10"].templates == sets["cifar100"].templates
    assert sets["cifar10"].expand("frog")[:2] == ["a photo of a frog.", "a blurry photo of a frog."]


def test_user_template_file_with_both_slot_styles(tmp_path: Path):
    f = tmp_path / "mine.txt"
    f.write_text("# my sketches\nA sketch of a {}.\n\n# comment\na {c} in the wild\n")
    ts = load_templates(str(f))
    assert ts.description == "my sketches"
    assert ts.expand("fox") == ["A sketch of a fox.", "a fox in the wild"]


def test_template_without_slot_is_a_usage_error_naming_file_and_line(tmp_path: Path):
    f = tmp_path / "bad.txt"
    f.write_text("a photo of a {}.\na photo\n")
    with pytest.raises(UsageError, match=r"bad.txt, line 2: 'a photo' has no \{\}"):
        load_templates(str(f))


def test_unknown_template_set_lists_the_known_ones():
    with pytest.raises(UsageError, match="unknown template set 'imagenet81'.*imagenet80"):
        load_templates("imagenet81")


def test_fill_leaves_other_braces_alone():
    assert fill("a {} photo {x}", "C{}D") == "a C{}D photo {x}"


def test_parse_classes_trims_whitespace():
    assert parse_classes(" cats , dogs,golden retriever ") == ["cats", "dogs", "golden retriever"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("cats,,dogs", "empty class name at position 2"),
        ("cats,dogs,", "empty class name at position 3"),
        ("cats,dogs,cats", "duplicate class names: 'cats'"),
        ("cats", "at least 2 class names"),
    ],
)
def test_bad_class_lists(text, message):
    with pytest.raises(UsageError, match=message):
        parse_classes(text)


names = st.lists(
    st.text(st.characters(blacklist_characters=",", blacklist_categories=("Cs", "Zs", "Cc")), min_size=1),
    min_size=2,
    max_size=8,
    unique_by=str.strip,
).filter(lambda ns: all(n.strip() == n and n for n in ns))


@given(names, st.lists(st.sampled_from([" ", "  ", "\t", ""]), min_size=16, max_size=16))
def test_parse_classes_roundtrip(ns, pads):
    text = ",".join(f"{pads[i % 16]}{n}{pads[(i + 1) % 16]}" for i, n in enumerate(ns))
    assert parse_classes(text) == ns


def test_classes_file_one_per_line(tmp_path: Path):
    f = tmp_path / "c.txt"
    f.write_text("cat\n dog \n\n")
    assert read_classes_file(f) == ["cat", "dog"]


def test_classes_tsv_uses_name_column_in_index_order(tmp_path: Path):
    f = tmp_path / "classes.tsv"
    f.write_text("index\tfolder\tname\n1\tdog_x\tdog\n0\tcat_x\tcat\n2\tgold_fish\tgold fish\n")
    assert read_classes_file(f) == ["cat", "dog", "gold fish"]


def test_csv_without_header_with_index_column(tmp_path: Path):
    f = tmp_path / "c.csv"
    f.write_text("2,bird\n0,cat\n1,dog\n")
    assert read_classes_file(f) == ["cat", "dog", "bird"]


def test_real_classes_tsv():
    names = read_classes_file(shared("cifar100-test") / "classes.tsv")
    assert len(names) == 100 and names[0] == "apple" and "aquarium fish" in names


def test_a_repeat_in_a_file_is_kept_as_eval_keeps_it(tmp_path: Path):
    # One rule for classify and eval (issue 12, item 25): curated lists repeat names; labels tell them apart.
    f = tmp_path / "c.txt"
    f.write_text("cat\ndog\ncat\n")
    assert read_classes_file(f) == ["cat", "dog", "cat"]
    f.write_text("cat\ncat\n")
    with pytest.raises(UsageError, match="c.txt: zero-shot classification needs at least 2 class names, got 1"):
        read_classes_file(f)
