"""What a sort will do, decided before any file moves: the folder each label goes to (a safe name, one-to-one),
and the checks of --sort-into DIR, --mode and --resume that need no model."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path

from zsclip.core.errors import UsageError
from zsclip.core.locks import probe
from zsclip.core.paths import check_output_dir
from zsclip.store.identity import StateError, made_from_of, read_state

MODES = ("copy", "link", "move")
MANIFEST = "manifest.csv"
COLUMNS = [
    "source",
    "destination",
    "label",
    "folder",
    "prob",
    "abstained",
    "size",
    "mtime_ns",
    "ctime_ns",
    "inode",
    "content_hash",
]
OLD_COLUMNS = COLUMNS[:6]  # manifests written before rows recorded their source's identity
STATE = ".zsclip-sort.json"  # the options of the sort, so --resume cannot continue a copy as a move
LOCK = ".zsclip-sort.lock"  # one writer at a time (zsclip.core.locks)
STATE_KIND = "sort"
MAX_NAME_BYTES = 100  # a folder name; file systems allow 255, but a folder name this long helps no one


_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}


_OURS = {MANIFEST, "thumbs", "pages"}  # names in DIR that a label folder must not take


_BAD_CHARS = re.compile(r'[\x00-\x1f\x7f/\\<>:"|?*]')


def safe_name(label: str, max_bytes: int = MAX_NAME_BYTES) -> str:
    """A folder name that is valid on Linux, macOS and Windows for `label`: path separators and characters
    Windows forbids become '_', leading dots (hidden folders, '..') and trailing dots and spaces go, reserved
    device names (CON, NUL, COM1...) get a '_', long names are cut and given a hash of the label, so two long
    labels stay apart, and a label with nothing left becomes 'label-<hash>'."""
    digest = hashlib.sha1(label.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    name = _BAD_CHARS.sub("_", label).strip().lstrip(".").rstrip(". ")
    if not name.strip("_"):
        return f"label-{digest}"
    base, dot, rest = name.partition(".")
    if base.rstrip(" ").lower() in _RESERVED:  # Windows reserves "NUL" and "nul.txt" alike
        name = f"{base}_{dot}{rest}"
    elif name.lower() in _OURS:
        name += "_"
    if len(name.encode("utf-8", "surrogatepass")) > max_bytes:
        cut = name.encode("utf-8", "surrogatepass")[: max_bytes - 9].decode("utf-8", "ignore").rstrip(". ")
        name = f"{cut}-{digest}"
    return name


class FolderNames:
    """Label -> folder name, one-to-one: two labels that clean to one name (or differ only in case, which
    macOS and Windows file systems do not tell apart) get '-2', '-3' in the order they are first seen."""

    def __init__(self, labels: Iterable[str] = ()):
        self.folders: dict[str, str] = {}
        self._taken: dict[str, str] = {}  # folder name, case-folded -> label
        for label in labels:
            self[label]

    def claim(self, label: str, folder: str) -> None:
        """Keep a folder given earlier (a resumed sort)."""
        self.folders.setdefault(label, folder)
        self._taken.setdefault(folder.casefold(), label)

    def __getitem__(self, label: str) -> str:
        if label not in self.folders:
            base = safe_name(label)
            name, n = base, 1
            while self._taken.get(name.casefold(), label) != label:
                n += 1
                name = f"{base}-{n}"
            self.claim(label, name)
        return self.folders[label]


def check_sort_target(
    directory: str | os.PathLike,
    mode: str = "copy",
    *,
    dry_run: bool = False,
    resume: bool = False,
    sources: Iterable[tuple[str, bool]] = (),
    recursive: bool = True,
    settings: dict | None = None,
) -> None:
    """The checks of --sort-into that need no model, so a mistake costs no loading. `sources` are the
    (path, explicit) pairs of zsclip.pipeline.sources.expand_sources; `settings` (with the mode) must match a sort being
    resumed. Raises UsageError."""
    if mode not in MODES:
        raise UsageError(f"--mode {mode}: use one of {', '.join(MODES)}")
    root = Path(directory)
    if root.exists() and not root.is_dir():
        raise UsageError(f"--sort-into {root}: is a file, not a folder")
    if not dry_run:
        check_output_dir(root, "--sort-into")  # it (or where it will be made) takes files
    manifest = root / MANIFEST
    if manifest.exists() and not resume:
        raise UsageError(
            f"--sort-into {root}: {manifest} holds an earlier sort; add --resume to continue it "
            "(or to add new images to it), or choose another folder"
        )
    if resume and manifest.exists():
        check_state(root, {"mode": mode, **(settings or {})})
    if not dry_run and root.is_dir():
        probe(root / LOCK, f"--sort-into {root}")
    here = os.path.realpath(root)
    for path, explicit in sources:
        if explicit:
            continue
        src = os.path.realpath(path)
        inside = here == src or (recursive and here.startswith(src.rstrip(os.sep) + os.sep))
        if inside:
            raise UsageError(
                f"--sort-into {root} is inside {path}, which is being classified: choose a folder outside it"
            )
        if src.startswith(here.rstrip(os.sep) + os.sep):
            raise UsageError(f"{path} is inside --sort-into {root}: sort from a folder outside it")


def check_state(root: Path, wanted: dict) -> dict:
    """The state of the sort in `root` (its body: `closed`), after checking it was made with `wanted`."""
    state = root / STATE
    try:
        return read_state(state, STATE_KIND, wanted)
    except StateError as exc:
        if not exc.stale:
            before = _old_state(state)  # written before state files had a header
            if before is None:
                raise UsageError(f"{state} is missing or damaged: cannot tell how {root / MANIFEST} was made") from None
            if before == json.loads(json.dumps(wanted)):
                return {}
        else:
            before = made_from_of(state, STATE_KIND) or {}
    wanted = json.loads(json.dumps(wanted))  # as it reads back: tuples become lists
    changed = [k for k in wanted if before.get(k) != wanted[k]]
    was = ", ".join(f"{k} {before.get(k)!r}" for k in changed if k == "mode")
    raise UsageError(
        f"--resume: {root} was sorted with other {', '.join(changed) or 'options'}{f' ({was})' if was else ''}; "
        "use the same options, or sort into another folder"
    )


def _old_state(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "zsclip_state" not in data else None
