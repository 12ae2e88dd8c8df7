"""Classified images -> DIR/<label>/ (copy, link or move), with a manifest that makes a killed move resumable.

Crash safety rests on one order, per image: the manifest row first (flushed), then the file. Each row records the
source's identity (zsclip.identity: size, mtime, ctime, inode and content hash) as it was when the row was written.
After a kill only the last row can be unfinished; a clean close records the manifest's length in the state file, so
a resume knows whether there is such a row at all. On --resume each row is checked against the disk (a move):

    destination there, source gone            done
    destination there, source there           the same inode (a rename interrupted between link and unlink), or
                                              the row is the unfinished one and both hold the recorded content (a
                                              cross-device copy whose source was not yet removed): remove the
                                              source. Otherwise the source is a new file that arrived at that path
                                              later: it is sorted as a new image (never deleted)
    destination missing, source there         not done: the row is dropped and the image sorted again
    both missing                              someone else removed them: kept, with a warning for the last row

Copy and link sorts leave their sources in place; a resumed run leaves out a source whose content is still the one
recorded (by the identity rule: stat, else hash), and sorts again one whose content changed since.

Files appear under their final name only whole: a copy is written to a hidden temporary name beside it and then
linked or renamed into place; a move on the same file system is a rename (an image is at its old name or its new
one, never both, never neither); across file systems it is copy + fsync + rename, and the source is removed only
after that. Leftover temporary files of a killed run are deleted on --resume. Only that cross-device move fsyncs
per image (it is the one step that destroys a copy); the manifest is fsynced every few seconds and the folders
at close, so a power cut (not a kill) may cost a copy its last seconds, never an image its only copy.

Labels become folder names through `safe_name`; the manifest states the folder of every label.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import io
import json
import os
import re
import shutil
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import IO, TYPE_CHECKING

from . import atomic
from .errors import UsageError, ZsclipError, is_disk_full, plural
from .identity import FileIdentity, StateError, read_state, same_content, unchanged, write_state
from .locks import Lock
from .sources import Exclude

if TYPE_CHECKING:  # classify imports torch; a sink must not
    from .classify import Prediction, Skipped

MODES = ("copy", "link", "move")
MANIFEST = "manifest.csv"
COLUMNS = ["source", "destination", "label", "folder", "prob", "abstained", "size", "mtime_ns", "ctime_ns", "inode",
           "content_hash"]  # fmt: skip
_OLD_COLUMNS = COLUMNS[:6]  # manifests written before rows recorded their source's identity
STATE = ".zsclip-sort.json"  # the options of the sort, so --resume cannot continue a copy as a move
LOCK = ".zsclip-sort.lock"  # one writer at a time (zsclip.locks)
STATE_KIND = "sort"
TMP_PREFIX = ".zsclip-"
TMP_SUFFIX = ".tmp"
MAX_NAME_BYTES = 100  # a folder name; file systems allow 255, but a folder name this long helps no one

_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}
_OURS = {MANIFEST, "thumbs", "pages"}  # names in DIR that a label folder must not take
_BAD_CHARS = re.compile(r'[\x00-\x1f\x7f/\\<>:"|?*]')


def _hook(point: str) -> None:
    """Called between the steps of placing a file ("row", "copied", "placed"); tests replace it to kill the
    process in each crash window."""


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
    (path, explicit) pairs of images.expand_sources; `settings` (with the mode) must match a sort being
    resumed. Raises UsageError."""
    if mode not in MODES:
        raise UsageError(f"--mode {mode}: use one of {', '.join(MODES)}")
    root = Path(directory)
    if root.exists() and not root.is_dir():
        raise UsageError(f"--sort-into {root}: is a file, not a folder")
    if not dry_run:
        from .output import check_output_dir

        check_output_dir(root, "--sort-into")  # it (or where it will be made) takes files
    manifest = root / MANIFEST
    if manifest.exists() and not resume:
        raise UsageError(
            f"--sort-into {root}: {manifest} holds an earlier sort; add --resume to continue it "
            "(or to add new images to it), or choose another folder"
        )
    if resume and manifest.exists():
        _check_state(root, {"mode": mode, **(settings or {})})
    if not dry_run and root.is_dir():
        from .locks import probe

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


def _check_state(root: Path, wanted: dict) -> dict:
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
            from .identity import made_from_of

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


class _Done:
    """The sources a sort has placed, for classify(exclude=...). A source is left out when this sort has it and it
    is still what was sorted: for a move, the file is gone from its source (a file found there now arrived later,
    or is a leftover the resume chose to keep); for a copy or link, its content is still the recorded one (by the
    identity rule), so an image edited since is sorted again. Matched by absolute path, so a resume from another
    working directory finds them all the same."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.rows: dict[str, FileIdentity | None] = {}  # source -> its identity when sorted (None: not recorded)
        self.kept: set[str] = set()  # move: sources left in place on purpose (identical to their destination)

    def __contains__(self, path: object) -> bool:
        if not isinstance(path, str):
            return False
        source = os.path.abspath(path)
        if source not in self.rows:
            return False
        if self.mode == "move":
            return source in self.kept or not os.path.lexists(source)
        recorded = self.rows[source]
        return recorded is None or unchanged(recorded, source)

    def __len__(self) -> int:
        return len(self.rows)

    def add(self, path: str, identity: FileIdentity | None = None) -> None:
        self.rows[path] = identity


class Sorter:
    """A sink for classify records: `add` places each classified image in DIR/<folder of its label>/ and
    writes its manifest row; skipped files stay where they are. `close` when done (or use `with`).

    `labels`: the class names, if known, so folders are given in class order (two labels that clean to one
    name get '-2', '-3' in that order) rather than in the order images arrive. `settings` are stored and must
    match on --resume (mode always). `plan` is where --dry-run writes its rows (stdout by default).
    `exclude` is what classify must leave out (exclude=...): the sources this sort has, and DIR itself, which the
    walk never enters however it is reached. One sort at a time writes into DIR (a lock; a second is refused)."""

    SYNC_EVERY = 5.0  # seconds between manifest fsyncs: what a power cut may cost the manifest; kill -9 costs none

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
    ):
        check_sort_target(directory, mode, dry_run=dry_run, resume=resume, settings=settings)
        self.root = Path(directory)
        self.mode = mode
        self.dry_run = dry_run
        self.settings = {"mode": mode, **(settings or {})}
        self.counts: Counter[str] = Counter()  # label -> images placed by this run
        self.names = FolderNames()
        self.folders = self.names.folders  # label -> folder name under root
        self._done = _Done(mode)
        self.exclude = Exclude(self._done)
        self.resumed = 0  # rows kept from the earlier run
        self.skipped = 0  # Skipped records seen (their files are not moved)
        self.missing: list[str] = []  # sources gone between classification and sorting
        self.warnings: list[str] = []
        self._claimed: set[str] = set()  # destinations planned by a dry run (which writes nothing)
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
        rows = self._read_manifest() if resume and (self.root / MANIFEST).exists() else None
        for label in labels:
            self.names[label]
        folder = Exclude.folder_id(self.root)
        self.exclude.folders = frozenset([folder] if folder else [])
        self._stream: IO[str]
        if self.dry_run:
            self._stream = plan or sys.stdout
            self._csv = csv.writer(self._stream)
            self._csv.writerow(COLUMNS)
            return
        self._write_state(closed=None)  # open: a kill from here on may leave the last row unfinished
        if rows is None:
            self._stream = open(self.root / MANIFEST, "w", encoding="utf-8", errors="surrogateescape", newline="")  # noqa: SIM115
            self._csv = csv.writer(self._stream)
            self._csv.writerow(COLUMNS)
            self._stream.flush()
        else:
            self._clean_temporary()
            self._stream = open(self.root / MANIFEST, "a", encoding="utf-8", errors="surrogateescape", newline="")  # noqa: SIM115
            self._csv = csv.writer(self._stream)
        self._synced = time.monotonic()

    def _write_state(self, closed: int | None) -> None:
        """The sort's options (checked by --resume) and, after a clean close, the manifest's length: no row of it
        is unfinished."""
        write_state(self.root / STATE, STATE_KIND, self.settings, {"closed": closed})

    # -- resuming --------------------------------------------------------------------------------------------
    def _read_manifest(self) -> list[list[str]]:
        """Rows of the earlier run, settled against the disk (see the module docstring), and the manifest rewritten
        if a torn or unfinished row had to go (or it was in the format before rows recorded identities)."""
        path = self.root / MANIFEST
        data = path.read_bytes()
        state = _check_state(self.root, self.settings)
        closed = state.get("closed") == len(data)  # closed cleanly, nothing written since: no unfinished row
        text = data.decode("utf-8", errors="surrogateescape")  # a name that is not UTF-8 keeps its bytes
        parsed = list(csv.reader(io.StringIO(text, newline="")))  # a file name may hold any line break
        if not parsed or parsed[0] not in (COLUMNS, _OLD_COLUMNS):
            raise UsageError(f"--resume: {path} is not a zsclip sort manifest (columns {','.join(COLUMNS)})")
        old_format = parsed[0] == _OLD_COLUMNS
        written = parsed[1:]
        if written and not data.endswith(b"\n"):
            written.pop()  # the kill cut the last row short: even a field that parses may be half a path
        rows = [_padded(r) for r in written if self._complete(r)]
        torn = len(rows) != len(parsed) - 1 or old_format
        kept = []
        for i, row in enumerate(rows):
            if self._settle(row, unfinished=not closed and i == len(rows) - 1):
                kept.append(row)
        torn = torn or len(kept) < len(rows)
        for row in kept:
            self._done.add(row[0], _identity(row))
            self.names.claim(row[2], row[3])
        self.resumed = len(kept)
        if torn and not self.dry_run:
            with atomic.atomic_open(path, "w", encoding="utf-8", errors="surrogateescape", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(COLUMNS)
                writer.writerows(kept)
        return kept

    @staticmethod
    def _complete(row: list[str]) -> bool:
        if len(row) not in (len(COLUMNS), len(_OLD_COLUMNS)) or row[5] not in ("True", "False"):
            return False
        try:
            float(row[4])
            if len(row) == len(COLUMNS):
                [int(v) for v in row[6:10]]
        except ValueError:
            return False
        return True

    def _settle(self, row: list[str], unfinished: bool) -> bool:
        """Check one row of the earlier run against the disk, finishing a move it interrupted; False when the
        row must go (its image is sorted again). `unfinished`: the row may be the one a kill interrupted."""
        source, dest = row[0], str(self.root / row[1])
        if not os.path.lexists(dest):
            if unfinished and not os.path.lexists(source):
                self.warnings.append(f"{source}: neither it nor {dest} exists any more (removed by hand?)")
            # Copy or link: not placed, sort it again. Move: the source is there (not placed: a kill, or a power
            # cut lost the rename) or gone with it (removed by hand): either way the row describes nothing.
            return not (unfinished or (self.mode == "move" and os.path.lexists(source)))
        if self.mode != "move" or not os.path.lexists(source):
            return True
        if _same_file(source, dest):  # a rename interrupted between link and unlink: one inode, two names
            self._finish_move(source)
            return True
        if _same_bytes(source, dest):
            if unfinished:  # the cross-device copy is whole (renamed into place only after fsync): finish the move
                self._finish_move(source)
            else:  # the very image, back at its source after the move finished: left alone, not sorted twice
                self._done.kept.add(source)
                self.warnings.append(f"{source}: identical to {dest}, sorted before; left where it is")
        # else: a new file arrived at the source's path since; it is sorted as a new image, never deleted
        return True

    def _finish_move(self, source: str) -> None:
        if not self.dry_run:
            os.unlink(source)
            atomic.fsync_dir(os.path.dirname(source) or ".")
        else:
            self._done.kept.add(source)

    def _clean_temporary(self) -> None:
        with contextlib.suppress(OSError):
            for folder in self.root.iterdir():
                if folder.is_dir() and not folder.is_symlink():
                    for tmp in folder.glob(f"{TMP_PREFIX}*{TMP_SUFFIX}"):
                        with contextlib.suppress(OSError):
                            tmp.unlink()

    # -- placing ---------------------------------------------------------------------------------------------
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
        source = os.path.abspath(record.path)
        if source in self._done:
            return None
        identity = FileIdentity.of(source)
        if identity is None:  # gone (or unreadable) between classification and sorting
            self.missing.append(source)
            return None
        folder = self.names[record.label]
        for _ in range(100):  # a name taken between the check and the rename (another writer) is retried
            name = self._free_name(folder, os.path.basename(source))
            dest = self.root / folder / name
            row = [source, f"{folder}/{name}", record.label, folder, f"{record.prob:.6f}", bool(record.abstained),
                   *_identity_columns(identity)]  # fmt: skip
            if self.dry_run:
                self._csv.writerow(row)
                self._claimed.add(f"{folder}/{name}")
                outcome = "placed"
            else:
                outcome = self._place(row, source, dest)
            if outcome != "taken":
                break
        else:
            raise ZsclipError(f"{self.root / folder}: could not find a free name for {source}")
        if outcome == "missing":
            self.missing.append(source)
            return None
        self._done.add(source, identity)
        self.counts[record.label] += 1
        return dest

    def _place(self, row: list, source: str, dest: Path) -> str:
        """Row first, then the file: "placed", or "taken" when `dest` was taken meanwhile, or "missing" when
        the source is gone (the row is taken back)."""
        if not os.path.lexists(source):
            return "missing"
        start = self._stream.tell()
        self._csv.writerow(row)
        self._stream.flush()
        _hook("row")
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            if self.mode == "move":
                _move(source, dest)
            elif self.mode == "copy":
                _via_temporary(dest, lambda tmp: shutil.copy2(source, tmp))
            else:
                _via_temporary(dest, lambda tmp: os.symlink(source, tmp))
        except BaseException as exc:
            self._take_back(start)
            if isinstance(exc, FileExistsError):
                return "taken"
            if isinstance(exc, FileNotFoundError) and not os.path.lexists(source):
                return "missing"
            if isinstance(exc, OSError):
                full = " (the disk is full: free space, then --resume)" if is_disk_full(exc) else ""
                raise ZsclipError(f"--sort-into: cannot {self.mode} {source} to {dest}: {exc}{full}") from exc
            raise
        self._tick()
        return "placed"

    def _take_back(self, offset: int) -> None:
        """Remove the last row: its file was not placed. The stream is put back at `offset` too, so the next row
        follows the last one (truncating alone would leave the position past the end: a hole of NUL bytes)."""
        with contextlib.suppress(OSError):
            self._stream.flush()
            self._stream.seek(offset)
            self._stream.truncate(offset)

    def _tick(self) -> None:
        if time.monotonic() - self._synced > self.SYNC_EVERY:
            os.fsync(self._stream.fileno())
            self._synced = time.monotonic()

    def close(self) -> None:
        """Flush the plan, or make the manifest durable and record that it was closed cleanly."""
        if self._stream.closed:
            return
        self._stream.flush()
        if not self.dry_run:
            with contextlib.suppress(OSError):
                os.fsync(self._stream.fileno())
            size = os.fstat(self._stream.fileno()).st_size
            self._stream.close()
            # Placing a file syncs nothing where a kill -9 cannot lose it (a power cut could); the sort's
            # folders are made durable here, once, not per image (which cost 10x the time on a virtual disk).
            for folder in {self.root, *(self.root / f for f in self.folders.values())}:
                atomic.fsync_dir(folder)
            self._write_state(closed=size)
        self._lock.release()

    def __enter__(self) -> Sorter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _padded(row: list[str]) -> list:
    """A row in today's columns (a row of the format before identities has them empty)."""
    return row + [""] * (len(COLUMNS) - len(row))


def _identity_columns(identity: FileIdentity) -> list:
    return [identity.size, identity.mtime_ns, identity.ctime_ns, identity.inode, identity.content_hash]


def _identity(row: list) -> FileIdentity | None:
    """The source's identity a row recorded, or None for a row written before rows recorded it."""
    if len(row) < len(COLUMNS) or row[10] == "":
        return None
    size, mtime, ctime, inode = (int(v) for v in row[6:10])
    return FileIdentity(os.path.abspath(row[0]), size, mtime, row[10], ctime, inode)


def _same_bytes(a: str, b: str) -> bool:
    return same_content(a, b)


# -- file operations ---------------------------------------------------------------------------------------
def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _commit(src: str | os.PathLike, dest: Path) -> None:
    """Give `src` the name `dest` unless that name exists (FileExistsError): a hard link fails on an existing
    name where rename would replace it; file systems without hard links get an existence check and a rename."""
    try:
        os.link(src, dest, follow_symlinks=False)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno == errno.EXDEV:
            raise
        if os.path.lexists(dest):
            raise FileExistsError(errno.EEXIST, "exists", str(dest)) from None
        os.rename(src, dest)
        return
    os.unlink(src)


def _via_temporary(dest: Path, write, durable: bool = False) -> None:
    """Write with `write(tmp)` to a hidden name beside `dest`, then give it the name `dest`; `durable`: the
    file and its name are on disk (fsynced) before this returns."""
    tmp = dest.parent / f"{TMP_PREFIX}{uuid.uuid4().hex[:12]}{TMP_SUFFIX}"
    try:
        write(tmp)
        if durable:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        _hook("copied")
        _commit(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if durable:
        atomic.fsync_dir(dest.parent)
    _hook("placed")


def _move(source: str, dest: Path) -> None:
    """A rename on the same file system (atomic: the image has its old name or its new one); across file
    systems a copy made durable before the source is removed. A symbolic link with a relative target would point
    elsewhere from its new folder: it is placed as a link to its target's absolute path instead."""
    if os.path.islink(source) and not os.path.isabs(os.readlink(source)):
        target = os.path.realpath(source)
        _via_temporary(dest, lambda tmp: os.symlink(target, tmp))
        os.unlink(source)
        return
    try:
        _commit(source, dest)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        _via_temporary(dest, lambda tmp: shutil.copy2(source, tmp), durable=True)
        os.unlink(source)
        return
    _hook("placed")
