"""Property-based tests (hypothesis) of the parsers a user's text goes through: model specs and template files.
(Class lists: tests/test_prompts.py.) Whatever the input, the answer is a result or a one-line UsageError."""

import open_clip
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from zsclip.errors import UsageError
from zsclip.models import parse_spec
from zsclip.prompts import fill, parse_templates

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
