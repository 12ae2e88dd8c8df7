"""The docs say what the code does: docs/cli.md is the commands' own --help (regenerate it with
`python -m zsclip.cli.docs > docs/cli.md`), and the pages the README links to exist."""

from __future__ import annotations

import re
from pathlib import Path

from zsclip.cli.docs import reference

REPO = Path(__file__).resolve().parents[1]


def test_the_cli_reference_is_the_commands_own_help():
    written = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    assert written == reference(), "docs/cli.md is out of date: python -m zsclip.cli.docs > docs/cli.md"


def test_every_option_in_the_reference_has_an_environment_variable():
    text = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    for section in text.split("\n## ")[1:]:
        options = re.findall(r"│ (--[a-z][a-z-]+)", section)
        for name in {o for o in options if o not in ("--help", "--version")}:
            assert f"ZSCLIP_{name[2:].upper().replace('-', '_')}" in section, (section.splitlines()[0], name)


def test_the_readme_links_resolve_and_it_stays_a_front_door():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for target in re.findall(r"\]\(((?:docs|bench|examples)/[^)#]+)", readme):
        assert (REPO / target).exists(), target
    assert len(readme.splitlines()) <= 300
