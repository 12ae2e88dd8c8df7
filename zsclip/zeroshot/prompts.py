"""Template sets (from prompts/ or a user's file) and class-name lists, parsed and checked.

A template set file is plain text: an optional first line `# description`, then one template per line with `{}`
(or `{c}`) where the class name goes. Blank lines and further `#` lines are ignored.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from zsclip.core.errors import UsageError
from zsclip.core.textfiles import csv_rows, read_text

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


def load_templates(
    name_or_file: str | Sequence[str] | TemplateSet, *, default: str | Sequence[str] | TemplateSet | None = None
) -> TemplateSet:
    """A shipped set by name, a user's template file, or a list of template strings.

    `default` is what the name 'default' stands for where it is used: the data set's or the model's own set
    (zsclip.evaluate.run.resolve_dataset_templates, zsclip.zeroshot.classifier.resolve_templates); without one,
    imagenet80."""
    if isinstance(name_or_file, TemplateSet):
        return name_or_file
    if not isinstance(name_or_file, str):
        _, templates = parse_templates("\n".join(name_or_file), "given as a list")
        return TemplateSet("custom", "templates given as a list", templates)
    if name_or_file == "default":
        return load_templates(DEFAULT_TEMPLATES if default in (None, "default") else default)
    shipped = _shipped() / f"{name_or_file}.txt"
    if "/" not in name_or_file and shipped.is_file():
        description, templates = parse_templates(shipped.read_text(encoding="utf-8"), name_or_file)
        return TemplateSet(name_or_file, description, templates)
    path = Path(name_or_file).expanduser()
    if path.is_file():
        description, templates = parse_templates(read_text(path, "template set "), str(path))
        return TemplateSet(path.stem, description or f"templates from {path}", templates)
    names = ", ".join(s.name for s in list_template_sets())
    raise UsageError(f"unknown template set {name_or_file!r}: use one of {names}, 'default', or a file path")


def check_classnames(names: Sequence[str], source: str) -> list[str]:
    """Reject empty names and fewer than 2 distinct classes, naming the offenders.

    A repeated name is allowed (curated lists repeat one: CLIP's ImageNet names hold 'missile' and 'sunglasses'
    twice); scoring is by index, and zsclip.zeroshot.classifier.build_classifier labels repeats apart and notes them.
    Typed lists
    are stricter: see parse_classes."""
    names = list(names)
    empty = [i + 1 for i, n in enumerate(names) if not n.strip()]
    if empty:
        where = ", ".join(map(str, empty))
        raise UsageError(f"{source}: empty class name at position {where}")
    if len(set(names)) < 2:
        raise UsageError(f"{source}: zero-shot classification needs at least 2 class names, got {len(set(names))}")
    return names


def parse_classes(text: str) -> list[str]:
    """Class names from a comma-separated option value, whitespace trimmed. A name typed twice is a typo here,
    unlike in a file (a curated list may repeat a name on purpose), so it is an error."""
    names = [n.strip() for n in text.split(",")]
    dupes = [n for n, k in Counter(names).items() if k > 1 and n]
    if dupes:
        raise UsageError(f"--classes: duplicate class names: {', '.join(map(repr, dupes))}")
    return check_classnames(names, "--classes")


_NAME_COLUMNS = ("name", "classname", "class_name", "class", "label")
_INDEX_COLUMNS = ("index", "idx", "id", "class_index", "label_index")
_FOLDER_COLUMNS = ("folder", "directory", "dir")
_HEADER_WORDS = frozenset((*_NAME_COLUMNS, *_INDEX_COLUMNS, *_FOLDER_COLUMNS))


@dataclass(frozen=True)
class ClassTable:
    """A class table's rows in class-index order: class i is the model's output i and, when the table has a
    `folder` column, the images in folders[i]."""

    names: list[str]
    folders: list[str] | None = None


def read_classes_file(path: str | Path, what: str = "--classes-file") -> list[str]:
    """Class names from a file: one per line, or a TSV/CSV table (e.g. classes.tsv: index, folder, name).

    In a table the names come from a `name`-like column (else the last column) and rows are put in the order of
    an index column when there is one (index, idx, id, class_index, label_index, or a first column of whole
    numbers), so class i is the model's output i. A first row naming such columns is a header, in a one-column
    file too. `what` names the file's origin in errors."""
    path = Path(path).expanduser()
    source = f"{what} {path}"
    if not path.exists():
        raise UsageError(f"{source}: no such file")
    text = read_text(path, f"{what} ")
    if path.suffix.lower() in (".tsv", ".csv"):
        names = parse_class_table(text, "\t" if path.suffix.lower() == ".tsv" else ",", source).names
    else:
        names = [line.strip() for line in text.splitlines() if line.strip()]
    return check_classnames(names, source)


def parse_class_table(text: str, delimiter: str, source: str) -> ClassTable:
    """Rows of a class table, checked: every row as wide as the first, whole-number unique indexes, no empty
    name. Errors are one line naming `source` and the line."""
    rows = list(csv_rows(text, source, delimiter))
    if not rows:
        raise UsageError(f"{source}: holds no class names")
    first = [c.strip().casefold() for c in rows[0][1]]
    width = len(first)
    has_header = any(c in _HEADER_WORDS for c in first) or (
        width > 1 and not _is_int(first[0]) and len(rows) > 1 and all(_is_int(r[0]) for _, r in rows[1:])
    )
    body = rows[1:] if has_header else rows
    if not body:
        raise UsageError(f"{source}: holds only a header, no class names")
    for lineno, row in body:
        while len(row) > width and not row[-1].strip():  # a trailing delimiter
            row.pop()
        if len(row) != width:
            quote = "; quote names that hold a comma" if delimiter == "," and len(row) > width else ""
            raise UsageError(
                f"{source}, line {lineno}: {len(row)} column{'s' * (len(row) != 1)} where line {rows[0][0]} has "
                f"{width}{quote}"
            )
    header = first if has_header else []
    name_col = next((header.index(c) for c in _NAME_COLUMNS if c in header), width - 1)
    index_col = next((header.index(c) for c in _INDEX_COLUMNS if c in header), None)
    if index_col is None and width > 1 and name_col != 0 and body and all(_is_int(r[0]) for _, r in body):
        index_col = 0
    folder_col = next((header.index(c) for c in _FOLDER_COLUMNS if c in header), None)
    if index_col is not None:
        seen: dict[int, int] = {}
        for lineno, row in body:
            cell = row[index_col].strip()
            if not _is_int(cell):
                column = f"column '{rows[0][1][index_col].strip()}'" if has_header else f"column {index_col + 1}"
                raise UsageError(f"{source}, line {lineno}: {column} holds {cell!r}, not a whole number")
            if int(cell) in seen:
                raise UsageError(f"{source}, line {lineno}: index {int(cell)} is on line {seen[int(cell)]} already")
            seen[int(cell)] = lineno
        body = sorted(body, key=lambda r: int(r[1][index_col]))
    for lineno, row in body:
        if not row[name_col].strip():
            raise UsageError(f"{source}, line {lineno}: empty class name")
        if folder_col is not None and not row[folder_col].strip():
            raise UsageError(f"{source}, line {lineno}: empty folder name")
    names = [row[name_col].strip() for _, row in body]
    folders = [row[folder_col].strip() for _, row in body] if folder_col is not None else None
    return ClassTable(names, folders)


def _is_int(cell: str) -> bool:
    """A whole number as a person writes one: ASCII digits, an optional minus sign."""
    digits = cell.strip().removeprefix("-")
    return digits.isascii() and digits.isdigit()


def class_names(classes: str | None, classes_file: str | Path | None) -> list[str]:
    """The class list of `--classes A,B` or `--classes-file FILE` (exactly one of them)."""
    if classes is not None and classes_file is not None:
        raise UsageError("give --classes or --classes-file, not both")
    if classes is not None:
        return parse_classes(classes)
    if classes_file is not None:
        return read_classes_file(classes_file)
    raise UsageError("no classes given: use --classes 'cat,dog' or --classes-file FILE")
