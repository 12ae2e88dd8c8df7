"""DIR/manifest.csv: one row per image, written (and flushed) before its file is placed, recording where it came
from, where it went, its label and the source's identity (zsclip.store.identity: size, mtime, ctime, inode and content
hash) as it was when the row was written. After a kill only the last row can be unfinished; a clean close
records the manifest's length in the state file, so a resume knows whether there is such a row at all.

On --resume each row is checked against the disk (a move):

    destination there, source gone            done
    destination there, source there           the same inode (a rename interrupted between link and unlink), or
                                              the row is the unfinished one and both hold the same bytes (a
                                              cross-device copy whose source was not yet removed): remove the
                                              source. The same bytes after a clean finish: the very image came
                                              back; it is left where it is, not sorted twice. Other bytes: a new
                                              file arrived at that path later; it is sorted as a new image
    destination missing, source there         not done: the row is dropped and the image sorted again
    both missing                              someone else removed them: kept, with a warning for the last row

Copy and link sorts leave their sources in place; a resumed run leaves out a source whose content is still the one
recorded (by the identity rule: stat, else hash), and sorts again one whose content changed since.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import time
from pathlib import Path
from typing import IO

from zsclip.classify.sort.placing import clean_temporary, same_file
from zsclip.classify.sort.plan import COLUMNS, MANIFEST, OLD_COLUMNS, STATE, STATE_KIND, check_state
from zsclip.core import atomic
from zsclip.core.errors import UsageError
from zsclip.store.identity import FileIdentity, same_content, unchanged, write_state


def physical(path: str) -> str:
    """The absolute path of the file the OS opens for `path`. abspath() removes `a/link/..` as text, which names
    another file when `link` is a symbolic link to a folder elsewhere (a move took that other file, under the
    classified file's label); `..` is resolved as the OS resolves it, through the folder's real path. The file's
    own name is kept (a link to an image is moved as the link)."""
    absolute = os.path.abspath(path)
    if ".." not in Path(path).parts:
        return absolute
    joined = os.path.join(os.getcwd(), path)
    return os.path.join(os.path.realpath(os.path.dirname(joined)), os.path.basename(joined))


class Done:
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
        source = physical(path)
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


class Manifest:
    """The manifest of the sort in `root`: read and settled on --resume, then written a row at a time."""

    SYNC_EVERY = 5.0  # seconds between fsyncs: what a power cut may cost the manifest; kill -9 costs none

    def __init__(self, root: Path, mode: str, settings: dict, dry_run: bool = False) -> None:
        self.root, self.mode, self.settings, self.dry_run = root, mode, settings, dry_run
        self.path = root / MANIFEST
        self.done = Done(mode)
        self.warnings: list[str] = []
        self.stream: IO[str] | None = None
        self._synced = time.monotonic()

    # -- resuming --------------------------------------------------------------------------------------------
    def resume(self) -> list[list]:
        """Rows of the earlier run, settled against the disk (see the module docstring), and the manifest
        rewritten if a torn or unfinished row had to go (or it was in the format before rows had identities)."""

        data = self.path.read_bytes()
        closed = check_state(self.root, self.settings).get("closed") == len(data)  # closed cleanly, unchanged
        text = data.decode("utf-8", errors="surrogateescape")  # a name that is not UTF-8 keeps its bytes
        parsed = list(csv.reader(io.StringIO(text, newline="")))  # a file name may hold any line break
        if not parsed or parsed[0] not in (COLUMNS, OLD_COLUMNS):
            raise UsageError(f"--resume: {self.path} is not a zsclip sort manifest (columns {','.join(COLUMNS)})")
        written = parsed[1:]
        if written and not data.endswith(b"\n"):
            written.pop()  # the kill cut the last row short: even a field that parses may be half a path
        rows = [padded(r) for r in written if complete(r)]
        kept = [row for i, row in enumerate(rows) if self._settle(row, unfinished=not closed and i == len(rows) - 1)]
        for row in kept:
            self.done.add(row[0], row_identity(row))
        if (len(kept) != len(parsed) - 1 or parsed[0] == OLD_COLUMNS) and not self.dry_run:
            with atomic.atomic_open(self.path, "w", encoding="utf-8", errors="surrogateescape", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(COLUMNS)
                writer.writerows(kept)
        return kept

    def _settle(self, row: list, unfinished: bool) -> bool:
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
        if same_file(source, dest):  # a rename interrupted between link and unlink: one inode, two names
            self._finish_move(source)
        elif same_content(source, dest):
            if unfinished:  # the cross-device copy is whole (renamed into place only after fsync): finish the move
                self._finish_move(source)
            else:  # the very image, back at its source after the move finished: left alone, not sorted twice
                self.done.kept.add(source)
                self.warnings.append(f"{source}: identical to {dest}, sorted before; left where it is")
        # else: a new file arrived at the source's path since; it is sorted as a new image, never deleted
        return True

    def _finish_move(self, source: str) -> None:
        if self.dry_run:
            self.done.kept.add(source)
            return
        os.unlink(source)
        atomic.fsync_dir(os.path.dirname(source) or ".")

    # -- writing ---------------------------------------------------------------------------------------------
    def open(self, continuing: bool, plan: IO[str] | None = None) -> None:
        """Start writing rows: appended to a resumed manifest, into a new one, or (a dry run) to `plan`."""
        if self.dry_run:
            self.stream = plan
            csv.writer(self.stream).writerow(COLUMNS)
            return
        self.write_state(closed=None)  # open: a kill from here on may leave the last row unfinished
        if continuing:
            clean_temporary(self.root)
        self.stream = open(  # noqa: SIM115 -- open for the sort's whole run; close() closes it
            self.path, "a" if continuing else "w", encoding="utf-8", errors="surrogateescape", newline=""
        )
        if not continuing:
            csv.writer(self.stream).writerow(COLUMNS)
            self.stream.flush()
        self._synced = time.monotonic()

    def write(self, row: list) -> int:
        """Write and flush one row; returns where it starts (for take_back)."""
        start = self.stream.tell() if not self.dry_run else 0
        csv.writer(self.stream).writerow(row)
        self.stream.flush()
        return start

    def take_back(self, offset: int) -> None:
        """Remove the last row: its file was not placed. The stream is put back at `offset` too, so the next row
        follows the last one (truncating alone would leave the position past the end: a hole of NUL bytes)."""
        with contextlib.suppress(OSError):
            self.stream.flush()
            self.stream.seek(offset)
            self.stream.truncate(offset)

    def tick(self) -> None:
        if time.monotonic() - self._synced > self.SYNC_EVERY:
            os.fsync(self.stream.fileno())
            self._synced = time.monotonic()

    def close(self, folders) -> None:
        """Flush a plan, or make the manifest and the sort's `folders` durable and record a clean close."""
        if self.stream is None or self.stream.closed:
            return
        self.stream.flush()
        if self.dry_run:
            return
        with contextlib.suppress(OSError):
            os.fsync(self.stream.fileno())
        size = os.fstat(self.stream.fileno()).st_size
        self.stream.close()
        # Placing a file syncs nothing where a kill -9 cannot lose it (a power cut could); the sort's folders are
        # made durable here, once, not per image (which cost 10x the time on a virtual disk).
        for folder in {self.root, *(self.root / f for f in folders)}:
            atomic.fsync_dir(folder)
        self.write_state(closed=size)

    def write_state(self, closed: int | None) -> None:
        """The sort's options (checked by --resume) and, after a clean close, the manifest's length: no row of it
        is unfinished."""
        write_state(self.root / STATE, STATE_KIND, self.settings, {"closed": closed})


def complete(row: list[str]) -> bool:
    """A row with every column and well-formed values (a torn row is not)."""
    if len(row) not in (len(COLUMNS), len(OLD_COLUMNS)) or row[5] not in ("True", "False"):
        return False
    try:
        float(row[4])
        if len(row) == len(COLUMNS):
            [int(v) for v in row[6:10]]
    except ValueError:
        return False
    return True


def padded(row: list[str]) -> list:
    """A row in today's columns (a row of the format before identities has them empty)."""
    return row + [""] * (len(COLUMNS) - len(row))


def identity_columns(identity: FileIdentity) -> list:
    return [identity.size, identity.mtime_ns, identity.ctime_ns, identity.inode, identity.content_hash]


def row_identity(row: list) -> FileIdentity | None:
    """The source's identity a row recorded, or None for a row written before rows recorded it."""
    if len(row) < len(COLUMNS) or row[10] == "":
        return None
    size, mtime, ctime, inode = (int(v) for v in row[6:10])
    return FileIdentity(os.path.abspath(row[0]), size, mtime, row[10], ctime, inode)
