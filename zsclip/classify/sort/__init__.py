"""Classified images -> DIR/<label>/ (copy, link or move), with a manifest that makes a killed move resumable.

Crash safety rests on one order, per image: the manifest row first (flushed), then the file
(zsclip.classify.sort.manifest
says how a resume settles the rows against the disk). Files appear under their final name only whole
(zsclip.classify.sort.placing). Labels become folder names through `safe_name` (zsclip.classify.sort.plan); the
manifest states the
folder of every label. One sort at a time writes into DIR: a second is refused (zsclip.core.locks), and the walk never
enters DIR, however it is reached."""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import IO, TYPE_CHECKING

from zsclip.classify.sort import placing
from zsclip.classify.sort.manifest import Done, Manifest, identity_columns, physical
from zsclip.classify.sort.plan import (
    COLUMNS,
    LOCK,
    MANIFEST,
    MAX_NAME_BYTES,
    MODES,
    OLD_COLUMNS,
    STATE,
    FolderNames,
    check_sort_target,
    safe_name,
)
from zsclip.core.errors import ZsclipError, is_disk_full
from zsclip.core.locks import Lock
from zsclip.core.wording import plural
from zsclip.pipeline.sources import Exclude, by_stem, companions
from zsclip.store.identity import FileIdentity

if TYPE_CHECKING:  # classify imports torch; a sink must not
    from zsclip.classify.predict import Prediction, Skipped

__all__ = [
    "COLUMNS",
    "LOCK",
    "MANIFEST",
    "MAX_NAME_BYTES",
    "MODES",
    "OLD_COLUMNS",
    "STATE",
    "Done",
    "FolderNames",
    "Sorter",
    "check_sort_target",
    "safe_name",
]


class Within:
    """Whether a file lies in the folders the user named: its folder's real path under one of theirs, or the file
    itself named (a path the user gave, or listed in an @list)."""

    def __init__(self, sources: Iterable[tuple[str, bool]]):
        self.folders, self.files = [], set()
        for path, is_file in sources:
            if is_file:
                self.files.add(physical(path))
            else:
                self.folders.append(os.path.join(os.path.realpath(path), ""))

    def __call__(self, source: str) -> bool:
        if source in self.files:
            return True
        folder = os.path.join(os.path.realpath(os.path.dirname(source)), "")
        return any(folder.startswith(root) for root in self.folders)


class Sorter:
    """A sink for classify records: `add` places each classified image in DIR/<folder of its label>/ and
    writes its manifest row; skipped files stay where they are. `close` when done (or use `with`).

    `labels`: the class names, if known, so folders are given in class order (two labels that clean to one
    name get '-2', '-3' in that order) rather than in the order images arrive. `settings` are stored and must
    match on --resume (mode always). `plan` is where --dry-run writes its rows (stdout by default).
    `exclude` is what classify must leave out (exclude=...): the sources this sort has, and DIR itself, which the
    walk never enters however it is reached. One sort at a time writes into DIR (a lock; a second is refused)."""

    def __init__(
        self,
        directory: str | os.PathLike,
        mode: str = "copy",
        *,
        dry_run: bool = False,
        resume: bool = False,
        labels: Iterable[str] = (),
        settings: dict | None = None,
        plan: IO[str] | None = None,
        sources: Iterable[tuple[str, bool]] | None = None,
        follow_links: bool = False,
    ):
        check_sort_target(directory, mode, dry_run=dry_run, resume=resume, settings=settings)
        # A move takes only files whose folder really lies under a folder the user named (or that they named
        # themselves): a symbolic link to a folder inside the inbox would otherwise empty the folder it points to.
        self.within = None if mode != "move" or follow_links or sources is None else Within(sources)
        self.outside: list[str] = []  # files left where they are, reached through a link out of the named folders
        self.root = Path(directory)
        self.mode = mode
        self.dry_run = dry_run
        self.counts: Counter[str] = Counter()  # label -> images placed by this run
        self.names = FolderNames()
        self.folders = self.names.folders  # label -> folder name under root
        self.manifest = Manifest(self.root, mode, {"mode": mode, **(settings or {})}, dry_run)
        self.exclude = Exclude(self.manifest.done)
        self.resumed = 0  # rows kept from the earlier run
        self.skipped = 0  # Skipped records seen (their files are not moved)
        self.missing: list[str] = []  # sources gone between classification and sorting
        self._claimed: set[str] = set()  # destinations planned by a dry run (which writes nothing)
        self._listings: dict[str, dict[str, list[str]]] = {}  # the source folder last moved from, by stem
        self._lock = Lock(self.root / LOCK, f"--sort-into {self.root}")
        if not dry_run:
            self.root.mkdir(parents=True, exist_ok=True)
            self._lock.acquire()
        try:
            self._open(resume, labels, plan)
        except BaseException:
            self._lock.release()
            raise

    def _open(self, resume: bool, labels: Iterable[str], plan: IO[str] | None) -> None:
        continuing = resume and self.manifest.path.exists()
        if continuing:
            for row in self.manifest.resume():
                self.names.claim(row[2], row[3])
                self.resumed += 1
        for label in labels:
            self.names[label]
        folder = Exclude.folder_id(self.root)
        self.exclude.folders = frozenset([folder] if folder else [])
        self.manifest.open(continuing, plan or sys.stdout)

    @property
    def warnings(self) -> list[str]:
        return self.manifest.warnings

    def renamed(self) -> dict[str, str]:
        """Labels whose folder is not the label itself: label -> folder."""
        return {label: folder for label, folder in self.folders.items() if label != folder}

    def summary(self) -> list[str]:
        """Lines for the log: what went where, folders that differ from their labels, what went wrong."""
        counts = ", ".join(f"{label} {n:,}" for label, n in self.counts.most_common())
        done = "would sort" if self.dry_run else "sorted"
        head = f"{done} {plural(self.counts.total(), 'image')} into {self.root} ({self.mode})"
        lines = [head + (f": {counts}" if counts else "")]
        if self.resumed:
            lines[0] += f" ({self.resumed:,} sorted before)"
        lines += [f"label {label!r} is in folder {folder}" for label, folder in self.renamed().items()]
        lines += [f"warning: {source} was gone before it could be sorted" for source in self.missing]
        if self.outside:
            more = f" and {len(self.outside) - 3:,} more" if len(self.outside) > 3 else ""
            lines.append(
                f"warning: left {plural(len(self.outside), 'file')} where they are: reached through a symbolic link to "
                f"a folder outside the ones you named ({', '.join(self.outside[:3])}{more}); --follow-links moves them"
            )
        lines += [f"warning: {w}" for w in self.warnings]
        return lines

    def _free_name(self, folder: str, name: str) -> str:
        """`name`, or name_1, name_2... : the first that is not taken in DIR/folder."""
        stem, ext = os.path.splitext(name)
        candidate, n = name, 0
        while os.path.lexists(self.root / folder / candidate) or f"{folder}/{candidate}" in self._claimed:
            n += 1
            suffix = f"_{n}{ext}"
            while len((stem + suffix).encode("utf-8", "surrogateescape")) > 255:
                stem = stem[:-1]
            candidate = stem + suffix
        return candidate

    def add(self, record: Prediction | Skipped) -> Path | None:
        """Place one classified image; returns where it went (or would go, in a dry run), or None for a
        skipped file, an image this sort has already, or a source that is gone."""
        if not hasattr(record, "label"):
            self.skipped += 1
            return None
        source = physical(record.path)
        if source in self.manifest.done:
            return None
        if self.within is not None and not self.within(source):
            self.outside.append(source)
            return None
        identity = FileIdentity.of(source)
        if identity is None:  # gone (or unreadable) between classification and sorting
            self.missing.append(source)
            return None
        folder = self.names[record.label]
        for _ in range(100):  # a name taken between the check and the rename (another writer) is retried
            name = self._free_name(folder, os.path.basename(source))
            dest = self.root / folder / name
            row = [
                source,
                f"{folder}/{name}",
                record.label,
                folder,
                f"{record.prob:.6f}",
                bool(record.abstained),
                *identity_columns(identity),
            ]
            outcome = self._plan_row(row, folder, name) if self.dry_run else self._place(row, source, dest)
            if outcome != "taken":
                break
        else:
            raise ZsclipError(f"{self.root / folder}: could not find a free name for {source}")
        if outcome == "missing":
            self.missing.append(source)
            return None
        self.manifest.done.add(source, identity)
        self.counts[record.label] += 1
        return dest

    def _plan_row(self, row: list, folder: str, name: str) -> str:
        self.manifest.write(row)
        self._claimed.add(f"{folder}/{name}")
        return "placed"

    def _place(self, row: list, source: str, dest: Path) -> str:
        """Row first, then the file: "placed", or "taken" when `dest` was taken meanwhile, or "missing" when
        the source is gone (the row is taken back)."""
        if not os.path.lexists(source):
            return "missing"
        start = self.manifest.write(row)
        placing.hook("row")
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            placing.PLACE[self.mode](source, dest)
        except BaseException as exc:
            self.manifest.take_back(start)
            if isinstance(exc, FileExistsError):
                return "taken"
            if isinstance(exc, FileNotFoundError) and not os.path.lexists(source):
                return "missing"
            if isinstance(exc, OSError):
                full = " (the disk is full: free space, then --resume)" if is_disk_full(exc) else ""
                raise ZsclipError(f"--sort-into: cannot {self.mode} {source} to {dest}: {exc}{full}") from exc
            raise
        self.manifest.tick()
        if self.mode == "move":
            self._carry(source, dest)
        return "placed"

    def _carry(self, source: str, dest: Path) -> None:
        """A moved photo's sidecars (and the RAW its JPEG stands for) go with it, named after its new name; one
        that cannot is left where it was and said (never written over another file)."""
        stem = os.path.splitext(dest.name)[0]
        folder = os.path.dirname(source)
        if folder not in self._listings:  # one listing per source folder, not one per photo moved out of it
            self._listings = {folder: by_stem(folder)}
        for path, template in companions(source, self._listings[folder]):
            target = dest.with_name(template.format(name=dest.name, stem=stem))
            try:
                placing.move(path, target)
            except OSError as exc:
                print(f"note: {path} stays (it goes with {source}, but: {exc})", file=sys.stderr)

    def close(self) -> None:
        """Flush the plan, or make the manifest durable and record that it was closed cleanly."""
        self.manifest.close(self.folders.values())
        self._lock.release()

    def __enter__(self) -> Sorter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
