"""The house: zsclip's modules import only down the layers of the data path (shared/STYLE.md), never in a circle,
and no module imports another's private name. Read from the source with ast, every import counted (those inside
functions and under TYPE_CHECKING too), so the package cannot quietly tangle again. docs/architecture.md writes
down the same layers, package by package."""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "zsclip"

# The packages, lowest first (docs/architecture.md says what each holds and why it sits where it does). A module may
# import from its own package and from the layers below, never from above.
LAYERS = [
    ("core", ["core"]),
    ("store", ["store"]),
    ("models", ["models"]),
    ("zeroshot", ["zeroshot"]),
    ("pipeline", ["pipeline"]),
    ("photos", ["photos"]),
    ("datasets", ["datasets"]),
    ("backends", ["backends"]),
    ("engines", ["engines"]),
    ("classify", ["classify"]),
    ("retrieval", ["retrieval"]),
    ("evaluate", ["evaluate"]),
    ("fewshot, video, train", ["fewshot", "video", "train"]),
    ("serve and cli", ["serve", "cli", "__main__", ""]),  # "": the package itself (zsclip/__init__, the API)
]
ARCHITECTURE = PACKAGE.parent / "docs" / "architecture.md"


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def layer_of(name: str) -> int:
    """The layer of a module: the listed package its dotted name starts with."""
    best, depth = None, -1
    for i, (_, names) in enumerate(LAYERS):
        for prefix in names:
            if (name == prefix or name.startswith(prefix + ".") or prefix == "") and len(prefix) > depth:
                if prefix == "" and name != "":
                    continue
                best, depth = i, len(prefix)
    assert best is not None, f"zsclip.{name} is in no layer of tests/test_layers.py: add it where it belongs"
    return best


def imports(name: str, path: Path, known: dict[str, Path]) -> list[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for every zsclip import in the module."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                target = ".".join([p for p in base if p] + ([node.module] if node.module else []))
            elif node.module and (node.module == "zsclip" or node.module.startswith("zsclip.")):
                target = node.module[len("zsclip.") :] if node.module != "zsclip" else ""
            else:
                continue
            names = [a.name for a in node.names]
            submodules = [n for n in names if (f"{target}.{n}" if target else n) in known]
            for n in submodules:  # `from . import atomic`, `from .models import spec`: the module itself
                found.append((f"{target}.{n}" if target else n, [], node.lineno))
            if len(submodules) < len(names):  # names defined in `target` itself
                found.append((target, [n for n in names if n not in submodules], node.lineno))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("zsclip"):
                    found.append((alias.name[len("zsclip.") :] if alias.name != "zsclip" else "", [], node.lineno))
    return [(t, n, line) for t, n, line in found if t in known]


def graph() -> tuple[dict[str, Path], dict[str, list[tuple[str, list[str], int]]]]:
    known = modules()
    return known, {name: imports(name, path, known) for name, path in known.items()}


def test_every_module_is_in_a_layer():
    known, _ = graph()
    for name in known:
        layer_of(name)


def test_imports_only_go_down():
    known, edges = graph()
    upward = []
    for name, targets in edges.items():
        for target, _, line in targets:
            if target == name or (name.startswith(target + ".") and known[name].name != "__init__.py"):
                continue  # a module's own package
            if layer_of(target) > layer_of(name):
                upward.append(
                    f"zsclip.{name} (layer {LAYERS[layer_of(name)][0]}) imports zsclip.{target} "
                    f"(layer {LAYERS[layer_of(target)][0]}) at {known[name].relative_to(PACKAGE.parent)}:{line}"
                )
    assert not upward, "imports from a lower layer to a higher one:\n" + "\n".join(sorted(upward))


def test_no_import_circles():
    known, edges = graph()
    adjacency = defaultdict(set)
    for name, targets in edges.items():
        for target, _, _ in targets:
            parent = known[name].name == "__init__.py" and target.startswith(name + ".")
            child = name.startswith(target + ".") and target != ""  # a submodule importing its package: Python's
            if target != name and not parent and not child:
                adjacency[name].add(target)
    circles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(adjacency[node]):
            if state.get(nxt) == "open":
                circles.append(" -> ".join([*stack[stack.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = "done"

    for node in sorted(adjacency):
        if node not in state:
            visit(node, [node])
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_no_private_name_crosses_a_module():
    known, edges = graph()
    crossing = [
        f"zsclip.{name} imports {n} from zsclip.{target} ({known[name].relative_to(PACKAGE.parent)}:{line})"
        for name, targets in edges.items()
        for target, names, line in targets
        for n in names
        if re.match(r"^_[^_]", n)
    ]
    assert not crossing, "private names imported from another module:\n" + "\n".join(crossing)


def test_the_readme_points_at_the_architecture():
    readme = (PACKAGE.parent / "README.md").read_text(encoding="utf-8")
    development = readme[readme.index("## Development") :]
    assert "docs/architecture.md" in development


def test_the_top_of_the_package_is_the_map():
    """zsclip/ holds folders by feature (and train.py, read top to bottom), every one listed in the layers and
    described in docs/architecture.md, so the folder list alone says where a feature lives."""
    entries = sorted(
        p.name
        for p in PACKAGE.iterdir()
        if not p.name.startswith(("_", ".")) and (p.suffix == ".py" or (p / "__init__.py").exists())
    )
    listed = {name for _, names in LAYERS for name in names if name and name != "__main__"}
    assert {e.removesuffix(".py") for e in entries} == listed
    assert len(entries) <= 17, f"{len(entries)} entries at the top of zsclip/: group them by feature"
    described = ARCHITECTURE.read_text(encoding="utf-8")
    missing = [e for e in entries if f"`{e.removesuffix('.py')}" not in described]
    assert not missing, f"docs/architecture.md does not describe {missing}"
    for _, names in LAYERS:  # the layer order written there is the one enforced here
        assert all(f"`{n}" in described for n in names if n and n != "__main__")
