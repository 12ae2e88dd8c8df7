"""No name points at nothing: every `zsclip.x.y` written in the package (docstrings, comments, error messages),
in docs/, README.md and bench/ resolves to a module or an attribute of one. A rename or a move that leaves an old
name behind fails here, with the file and line that still says it."""

from __future__ import annotations

import dataclasses
import importlib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REF = re.compile(r"(?<![\w/.-])zsclip(?:\.[A-Za-z_][A-Za-z0-9_]*)+")
FILES = [
    *sorted((ROOT / "zsclip").rglob("*.py")),
    *sorted((ROOT / "zsclip").rglob("*.html")),
    *sorted((ROOT / "docs").glob("*.md")),
    ROOT / "README.md",
    *sorted((ROOT / "bench").glob("*.py")),
    ROOT / "bench" / "README.md",
    *sorted((ROOT / "examples").glob("*.py")),
]


FILE_SUFFIXES = {"sqlite", "json", "jsonl", "csv", "html", "png", "lock", "txt", "md", "tar", "parquet"}


def resolve(dotted: str) -> bool:
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
            break
        except ModuleNotFoundError:
            continue
    else:
        return False
    for attr in parts[i:]:
        fields = {f.name for f in dataclasses.fields(obj)} if dataclasses.is_dataclass(obj) else set()
        if attr in fields or attr in getattr(obj, "__annotations__", {}):
            return True  # a field named on its class
        if not hasattr(obj, attr):
            return False
        obj = getattr(obj, attr)
    return True


def references() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in FILES:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for match in REF.finditer(line):
                name = match.group(0)
                if name.rsplit(".", 1)[-1] in FILE_SUFFIXES or "._" in name:
                    continue  # a file name (zsclip.sqlite), or an internal key that names no code
                found.setdefault(name, []).append(f"{path.relative_to(ROOT)}:{n}")
    return found


def test_every_dotted_name_resolves():
    found = references()
    assert len(found) > 100  # the scan reads what it should
    broken = [f"{name} ({', '.join(where[:3])})" for name, where in sorted(found.items()) if not resolve(name)]
    assert not broken, "names that point at nothing:\n" + "\n".join(broken)


def test_the_scan_catches_a_moved_name():
    assert resolve("zsclip.classify.run.run") and resolve("zsclip.engines.ReadOptions.exact")
    assert not resolve("zsclip.encode.embed_stream") and not resolve("zsclip.datasets.load_wdss")
