"""Template sets (from prompts/ or a user's file) and class-name lists, parsed and checked.

A template set file is plain text: an optional first line `# description`, then one template per line with `{}`
(or `{c}`) where the class name goes. Blank lines and further `#` lines are ignored.
"""

from __future__ import annotations

import csv
import functools
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .errors import UsageError

DEFAULT_TEMPLATES = "imagenet80"
_SLOT = re.compile(r"\{c?\}")


@dataclass(frozen=True)
class TemplateSet:
    name: str
    description: str
    templates: tuple[str, ...]

    def expand(self, classname: str) -> list[str]:
        return [classname.join(parts) for parts in self._parts]

    @functools.cached_property
    def _parts(self) -> list[list[str]]:
        return [_SLOT.split(t) for t in self.templates]


def fill(template: str, classname: str) -> str:
    """Put a class name into a template; unlike str.format, braces in the name or elsewhere are left alone."""
    return classname.join(_SLOT.split(template))


def parse_templates(text: str, source: str) -> tuple[str, tuple[str, ...]]:
    """(description, templates) from a template file's text; every template must have a `{}` slot."""
    description = ""
    templates: list[str] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            if not templates and not description:
                description = line.lstrip("#").strip()
            continue
        if not _SLOT.search(line):
            raise UsageError(f"template set {source}, line {lineno}: {line!r} has no {{}} for the class name")
        templates.append(line)
    if not templates:
        raise UsageError(f"template set {source} holds no templates (one per line, with {{}} for the class name)")
    return description, tuple(templates)


def _shipped() -> resources.abc.Traversable:
    return resources.files("zsclip.prompt_files")


def list_template_sets() -> list[TemplateSet]:
    """The template sets shipped in prompts/, by name."""
    sets = []
    for entry in sorted(_shipped().iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".txt") and entry.is_file():
            name = entry.name[: -len(".txt")]
            description, templates = parse_templates(entry.read_text(encoding="utf-8"), name)
            sets.append(TemplateSet(name, description, templates))
    return sets


def load_templates(name_or_file: str | Sequence[str] | TemplateSet) -> TemplateSet:
    """A shipped set by name, a user's template file, or a list of template strings."""
    if isinstance(name_or_file, TemplateSet):
        return name_or_file
    if not isinstance(name_or_file, str):
        _, templates = parse_templates("\n".join(name_or_file), "given as a list")
        return TemplateSet("custom", "templates given as a list", templates)
    shipped = _shipped() / f"{name_or_file}.txt"
    if "/" not in name_or_file and shipped.is_file():
        description, templates = parse_templates(shipped.read_text(encoding="utf-8"), name_or_file)
        return TemplateSet(name_or_file, description, templates)
    path = Path(name_or_file).expanduser()
    if path.is_file():
        description, templates = parse_templates(_read_text(path), str(path))
        return TemplateSet(path.stem, description or f"templates from {path}", templates)
    names = ", ".join(s.name for s in list_template_sets())
    raise UsageError(f"unknown template set {name_or_file!r}: use one of {names}, 'default', or a file path")


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from exc


def check_classnames(names: Sequence[str], source: str) -> list[str]:
    """Reject empty, duplicate and too few class names, naming the offenders."""
    names = list(names)
    empty = [i + 1 for i, n in enumerate(names) if not n]
    if empty:
        where = ", ".join(map(str, empty))
        raise UsageError(f"{source}: empty class name at position {where}")
    dupes = [n for n, k in Counter(names).items() if k > 1]
    if dupes:
        raise UsageError(f"{source}: duplicate class names: {', '.join(map(repr, dupes))}")
    if len(names) < 2:
        raise UsageError(f"{source}: zero-shot classification needs at least 2 class names, got {len(names)}")
    return names


def parse_classes(text: str) -> list[str]:
    """Class names from a comma-separated option value, whitespace trimmed."""
    return check_classnames([n.strip() for n in text.split(",")], "--classes")


_NAME_COLUMNS = ("name", "classname", "class_name", "class", "label")
_INDEX_COLUMNS = ("index", "idx", "id", "class_index", "label_index")


def read_classes_file(path: str | Path) -> list[str]:
    """Class names from a file: one per line, or a TSV/CSV table (e.g. classes.tsv: index, folder, name).

    In a table the names come from a `name`-like column (else the last column) and rows are put in the order of
    an index column when there is one, so class i is the model's output i.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise UsageError(f"--classes-file {path}: no such file")
    text = _read_text(path)
    if path.suffix.lower() in (".tsv", ".csv"):
        names = _classes_from_table(text, "\t" if path.suffix.lower() == ".tsv" else ",", path)
    else:
        names = [line.strip() for line in text.splitlines() if line.strip()]
    return check_classnames(names, str(path))


def _classes_from_table(text: str, delimiter: str, path: Path) -> list[str]:
    rows = [r for r in csv.reader(text.splitlines(), delimiter=delimiter) if any(c.strip() for c in r)]
    if not rows:
        return []
    if len(rows[0]) == 1:
        return [r[0].strip() for r in rows]
    header = [c.strip().lower() for c in rows[0]]
    has_header = not header[0].lstrip("-").isdigit()
    body = rows[1:] if has_header else rows
    name_col = next((header.index(c) for c in _NAME_COLUMNS if has_header and c in header), len(header) - 1)
    index_col = next((header.index(c) for c in _INDEX_COLUMNS if has_header and c in header), None)
    if index_col is None and body and all(r[0].strip().lstrip("-").isdigit() for r in body):
        index_col = 0
    try:
        if index_col is not None:
            body = sorted(body, key=lambda r: int(r[index_col]))
        return [r[name_col].strip() for r in body]
    except (IndexError, ValueError) as exc:
        raise UsageError(f"--classes-file {path}: malformed table ({exc})") from exc


def class_names(classes: str | None, classes_file: str | Path | None) -> list[str]:
    """The class list of `--classes A,B` or `--classes-file FILE` (exactly one of them)."""
    if classes is not None and classes_file is not None:
        raise UsageError("give --classes or --classes-file, not both")
    if classes is not None:
        return parse_classes(classes)
    if classes_file is not None:
        return read_classes_file(classes_file)
    raise UsageError("no classes given: use --classes 'cat,dog' or --classes-file FILE")
