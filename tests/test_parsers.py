"""Property-based tests (hypothesis) of the parsers a user's text goes through: model specs, template files, class
tables, csv: data sets, @lists and captions. (Typed class lists: tests/test_prompts.py.) Whatever the input, the
answer is a result or a one-line UsageError."""

import csv
import io
import tempfile
from pathlib import Path

import open_clip
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from zsclip.core.errors import UsageError
from zsclip.datasets import load_dataset
from zsclip.models import parse_spec
from zsclip.pipeline.sources import expand_sources
from zsclip.train import read_captions
from zsclip.zeroshot.prompts import _HEADER_WORDS, fill, parse_class_table, parse_templates, read_classes_file

PRETRAINED = open_clip.list_pretrained()
ARCHS = sorted({a for a, _ in PRETRAINED})
line_text = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.text())
@example("~0")  # each of these crashed or gave a multi-line error once; hypothesis found them
@example("/\n0")
@example("0" * 300)
@example("~\x00")
def test_any_model_spec_is_a_spec_or_a_one_line_usage_error(spec):
    try:
        parsed = parse_spec(spec)
    except UsageError as exc:
        assert str(exc) and len(str(exc).splitlines()) == 1
    else:
        assert parsed.kind in ("shipped", "hf-hub", "local-dir", "checkpoint", "pretrained")


@given(st.sampled_from(PRETRAINED), st.sampled_from(["", " ", "\t", "  \n"]))
def test_every_pretrained_tag_parses_with_any_surrounding_whitespace(pair, pad):
    arch, tag = pair
    parsed = parse_spec(f"{pad}{arch}:{tag}{pad}")
    assert (parsed.kind, parsed.arch, parsed.source) == ("pretrained", arch, tag)


@given(st.sampled_from(ARCHS), st.text(st.characters(categories=("Ll", "Nd")), min_size=1, max_size=12))
def test_unknown_tags_name_the_architecture_and_its_tags(arch, tag):
    if tag in open_clip.list_pretrained_tags_by_model(arch):
        return
    with pytest.raises(UsageError, match=f"unknown pretrained tag '{tag}' for {arch}"):
        parse_spec(f"{arch}:{tag}")


template = st.builds(lambda a, b: f"{a.strip()} {{}} {b.strip()}".strip(), line_text, line_text).filter(
    lambda t: not t.startswith("#")  # a line starting with # is a comment
)


@given(
    st.lists(template, min_size=1, max_size=20),
    st.lists(st.sampled_from(["", "   ", "# a comment", "#", "\t"]), min_size=21, max_size=21),
    st.one_of(st.none(), line_text),
)
def test_template_files_give_back_their_templates_in_order(templates, gaps, description):
    head = f"# {description}\n" if description is not None else ""
    text = head + "".join(f"{gaps[i]}\n{t}\n" for i, t in enumerate(templates)) + gaps[-1]
    got_description, got = parse_templates(text, "f.txt")
    assert list(got) == [t.strip() for t in templates]
    # The description is the first non-empty comment before the first template.
    comments = [head.strip(), gaps[0].strip()]
    expected = next((c.lstrip("#").strip() for c in comments if c.startswith("#") and c.lstrip("#").strip()), "")
    assert got_description == expected


@given(st.lists(template, max_size=5), line_text.filter(lambda s: s.strip() and "{}" not in s and "{c}" not in s
                                                        and not s.strip().startswith("#")))  # fmt: skip
def test_a_line_without_a_slot_is_named_by_its_number(templates, bad):
    text = "\n".join([*templates, bad])
    with pytest.raises(UsageError, match=f"line {len(templates) + 1}: .* has no {{}} for the class name"):
        parse_templates(text, "f.txt")


@given(template.filter(lambda t: "{c}" not in t), st.text())
def test_fill_puts_the_name_in_every_slot_and_leaves_braces_alone(t, name):
    assert fill(t, name) == name.join(t.split("{}"))
    assert fill(t, "{}") == t  # braces in a class name are text, not another slot


@given(st.text(), st.text().filter(lambda s: "{" not in s and "}" not in s))
def test_the_c_slot_of_open_clip_templates_is_a_slot_too(name, text):
    assert fill(f"{text}{{c}}{text}", name) == f"{text}{name}{text}"


# -- class tables, csv: data sets, @lists and captions (issue 12: readers of a user's files) -------------------
# Each reader answers any file with its result or a one-line UsageError naming the file, never a traceback.
cell_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1).filter(
    lambda s: s == s.strip() and bool(s)
)


def _one_line(exc: UsageError) -> None:
    assert str(exc) and len(str(exc).splitlines()) == 1


def _table(rows: list[list[str]], delimiter: str) -> str:
    out = io.StringIO()
    csv.writer(out, delimiter=delimiter).writerows(rows)
    return out.getvalue()


@settings(max_examples=200)
@given(
    st.lists(cell_text, min_size=1, max_size=12, unique=True),
    st.data(),
    st.sampled_from([",", "\t"]),
    st.sampled_from(["index", "idx", "id", "class_index", "label_index", "ID", " Index "]),
    st.booleans(),
)
def test_class_tables_give_names_and_folders_in_index_order(names, data, delimiter, index_name, with_folders):
    indexes = data.draw(st.lists(st.integers(-5, 10**6), min_size=len(names), max_size=len(names), unique=True))
    folders = [f"f{i}" for i in range(len(names))]
    columns = [(index_name, [str(i) for i in indexes]), ("name", names)]
    if with_folders:
        columns.append(("folder", folders))
    columns = data.draw(st.permutations(columns))
    rows = [[c for c, _ in columns]] + [[v[r] for _, v in columns] for r in range(len(names))]
    table = parse_class_table(_table(rows, delimiter), delimiter, "t")
    order = sorted(range(len(names)), key=indexes.__getitem__)
    assert table.names == [names[i] for i in order]
    assert table.folders == ([folders[i] for i in order] if with_folders else None)


@given(
    st.lists(cell_text.filter(lambda s: s.strip().casefold() not in _HEADER_WORDS), min_size=1,
             max_size=10, unique=True),
    st.randoms(use_true_random=False),
)  # fmt: skip
def test_headerless_index_name_tables_are_put_in_index_order(names, rnd):
    indexes = list(range(len(names)))
    rnd.shuffle(indexes)
    text = _table([[str(i), n] for i, n in zip(indexes, names, strict=True)], ",")
    assert parse_class_table(text, ",", "t").names == [n for _, n in sorted(zip(indexes, names, strict=True))]


@given(st.lists(cell_text.filter(lambda s: "," not in s and '"' not in s and "\n" not in s and "\r" not in s),
                min_size=1, max_size=10), st.sampled_from(["name", "Name", "class", "label"]))  # fmt: skip
def test_a_one_column_table_never_keeps_its_header_as_a_class(names, header):
    assert parse_class_table("\n".join([header, *names]), ",", "t").names == names


@settings(max_examples=300)
@given(st.text(), st.sampled_from([",", "\t"]))
@example("CLASS_INDEX", ",")  # a header alone once gave an empty class list
def test_any_class_table_text_gives_names_or_a_one_line_usage_error(text, delimiter):
    try:
        table = parse_class_table(text, delimiter, "t.tsv")
    except UsageError as exc:
        _one_line(exc)
    else:
        assert table.names and all(n and n == n.strip() for n in table.names)
        assert table.folders is None or len(table.folders) == len(table.names)


@settings(max_examples=150)
@given(st.binary(max_size=300), st.sampled_from(["c.txt", "c.csv", "c.tsv"]))
@example(b"\xef\xbb\xbfname\ncat\ndog\n", "c.csv")
@example(b"cat\ndog\nb\xe9uf\n", "c.txt")
def test_any_classes_file_gives_names_or_a_one_line_usage_error(content, name):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, name)
        path.write_bytes(content)
        try:
            names = read_classes_file(path)
        except UsageError as exc:
            _one_line(exc)
        else:
            assert len(set(names)) >= 2 and "\ufeff" not in names[0]


path_text = st.text(st.sampled_from("abcxyz_-. é/"), min_size=1, max_size=12).filter(
    lambda s: s == s.strip() and not s.startswith("/")
)


@settings(max_examples=150)
@given(
    st.lists(st.tuples(path_text, cell_text), min_size=2, max_size=15).filter(lambda r: len({lab for _, lab in r}) > 1),
    st.data(),
)
def test_csv_data_sets_give_every_row_its_label(rows, data):
    extra = data.draw(st.lists(st.sampled_from(["note", "split", "x"]), unique=True, max_size=2))
    header = data.draw(st.permutations(["path", "label", *extra]))
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp, "labels.csv")
        values = [{"path": p, "label": lab, **{e: "v" for e in extra}} for p, lab in rows]
        f.write_text(_table([header] + [[v[c] for c in header] for v in values], ","), encoding="utf-8")
        d = load_dataset(f"csv:{f}")
        assert [(p, d.classnames[label]) for p, label in d.items] == [(str(Path(tmp, p)), lab) for p, lab in rows]


@settings(max_examples=200)
@given(st.binary(max_size=300), st.booleans())
@example(b"path,label\na.png\n", False)
@example(b"path,label\na.png,7\n", True)
@example(b"\xef\xbb\xbfpath,label\na.png,0\nb.png,1\n", True)
def test_any_csv_data_set_gives_a_data_set_or_a_one_line_usage_error(content, with_classnames):
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp, "labels.csv")
        f.write_bytes(content)
        names = Path(tmp, "names.txt")
        names.write_text("cat\ndog\n")
        try:
            d = load_dataset(f"csv:{f}", classnames=str(names) if with_classnames else None)
        except UsageError as exc:
            _one_line(exc)
        else:
            assert d.items and all(0 <= label < len(d.classnames) for _, label in d.items)


@settings(max_examples=150)
@given(st.binary(max_size=200))
@example(b"index\tfolder\tname\n0\ta\tcat\n1\tb\n")
@example(b"id\tfolder\tname\n1\ta\tcat\n0\tb\tdog\n")
def test_any_classes_tsv_in_an_image_folder_gives_a_data_set_or_a_one_line_usage_error(content):
    with tempfile.TemporaryDirectory() as tmp:
        for folder in ("a", "b"):
            Path(tmp, folder).mkdir()
        Path(tmp, "classes.tsv").write_bytes(content)
        try:
            d = load_dataset(tmp)
        except UsageError as exc:
            _one_line(exc)
        else:
            assert len(set(d.classnames)) >= 2


@settings(max_examples=150)
@given(st.binary(max_size=200))
@example(b"\xef\xbb\xbfa.png\n")
@example(b"caf\xe9.png\n\x00\n")
def test_any_list_file_gives_sources_or_a_one_line_usage_error(content):
    with tempfile.TemporaryDirectory() as tmp:
        listing = Path(tmp, "list.txt")
        listing.write_bytes(content)
        try:
            sources = expand_sources([f"@{listing}"])
        except UsageError as exc:
            _one_line(exc)
        else:
            assert sources and all(p == p.strip() and not p.startswith("\ufeff") for p, _ in sources)


@settings(max_examples=150)
@given(st.binary(max_size=200))
@example(b"filepath,caption\na.png\n")
@example(b"\xef\xbb\xbffilepath,caption\na.png,a cat\n")
@example("filepath,caption\na.png,un café\n".encode("latin-1"))
def test_any_captions_csv_gives_pairs_or_a_one_line_usage_error(content):
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "a.png").write_bytes(b"")
        Path(tmp, "captions.csv").write_bytes(content)
        try:
            _, pairs, _ = read_captions(tmp)
        except UsageError as exc:
            _one_line(exc)
        else:
            assert pairs and all(p and c for p, c in pairs)
