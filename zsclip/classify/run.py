"""A classify run, as `zsclip classify` makes it: the stream of records (zsclip.classify.predict) written to stdout
or the crash-safe --output file, the --failures log, the sort and the gallery, with the progress bar. Records
arrive in walk order and each is written as it comes, so an interrupted run keeps its work."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TextIO

from zsclip.classify.gallery import Gallery
from zsclip.classify.output import RESUMABLE, FailuresLog, OutputFile, OutputPlan, make_writer
from zsclip.classify.output.render import EXIF_COLUMNS
from zsclip.classify.predict import Skipped, classify
from zsclip.classify.recheck import Recheck
from zsclip.classify.sort import Sorter
from zsclip.core import progress
from zsclip.core.errors import ZsclipError, is_disk_full
from zsclip.core.wording import all_skipped, plural
from zsclip.engines import ReadOptions, Runtime
from zsclip.models import ClipModel
from zsclip.photos.facts import FactsTable, facts_of
from zsclip.pipeline.sources import Exclude, count_candidates
from zsclip.store.cache import Cache
from zsclip.zeroshot.classifier import Classifier


@dataclass
class Counts:
    done: int = 0
    skipped: int = 0
    resumed: int = 0  # records an interrupted run had already written
    rechecked: int = 0  # int8 labels settled by the fp32 tower (zsclip.classify.recheck)


def output_settings(clip, clf, fmt: str, top_k: int, threshold: float | None, exact: bool, exif: bool = False) -> dict:
    """What an --output file was made with: --resume refuses to continue it with anything else."""
    return {
        "format": fmt,
        "model": clip.fingerprint,
        "classes": clf.classnames,
        "templates": clf.templates.templates,
        "top_k": top_k,
        "threshold": threshold,
        "exact_preprocess": exact,
        # Only off torch, so --output files written before backends existed still resume.
        **({"backend": clip.backend} if getattr(clip, "backend", "torch") != "torch" else {}),
        **({"exif": True} if exif else {}),  # only when asked, so files written before --exif still resume
    }


def run(
    clip: ClipModel,
    clf: Classifier,
    sources: list[tuple[str, bool]],
    plan: OutputPlan,
    read: ReadOptions,
    runtime: Runtime | None = None,
    *,
    inputs: list[str],
    top_k: int,
    threshold: float | None = None,
    strict: bool = False,
    quiet: bool = False,
    show: bool = False,
    sorter: Sorter | None = None,
    gallery: Gallery | None = None,
    sinks: Sequence = (),
    exif: bool = False,
    stdout: TextIO | None = None,
    made_of: dict | None = None,
) -> Counts:
    """Classify `sources` and write every record where `plan` (zsclip.classify.output.plan_output) says: to stdout,
    or to the output file (FILE.partial, renamed when the run ends; a resumed plan continues it, for the same
    `inputs`, and `made_of` is what a finished file records). Skipped files go to stderr and the failures log.
    `sorter`, `gallery` and `sinks` (zsclip.photos.xmp.TagWriter: anything with `add(record, moved_to)` that is a
    context manager) receive every record too; they are closed here. `exif`: records gain the taken, camera and gps
    columns (zsclip.photos.exif). `stdout`: where records go without an output file (default sys.stdout)."""
    counts = Counts()
    fmt, output = plan.fmt, plan.output
    settings = output_settings(clip, clf, fmt, top_k, threshold, read.exact, exif)
    columns = EXIF_COLUMNS if exif else ()
    facts = FactsTable(read.cache or Cache()) if exif else None  # opened once, asked per record
    with contextlib.ExitStack() as stack:
        out_file = OutputFile(output, fmt, settings, plan.resume, inputs=inputs, run=made_of) if output else None
        if out_file and out_file.done:
            counts.resumed = len(out_file.done)
            progress.log(f"resuming {out_file.partial}: {plural(counts.resumed, 'image')} already classified")
        for sink in (sorter, gallery, *sinks):
            if sink is not None:
                stack.enter_context(sink)
        dry_run = sorter is not None and sorter.dry_run
        out = out_file.stream if out_file else (None if dry_run else stdout or sys.stdout)  # a dry run: its plan
        fail_log = stack.enter_context(FailuresLog(plan.failures)) if plan.failures else None
        header = not (out_file and out_file.appending)
        writer = make_writer(fmt, out, top_k, header=header, extra=columns) if out else None
        written = out_file.done if out_file else ()
        bar = stack.enter_context(progress.bar("classifying", None, "img", show))
        exclude = _finished(out_file, sorter)
        if bar:

            def total() -> int:
                return count_candidates(sources, read.recursive, read.shard, exclude)

            threading.Thread(target=lambda: bar.update(0, total=total()), daemon=True).start()
        recheck = Recheck(clip, clf, read)
        records: Iterable = classify(
            clip, clf, sources, read.but(exclude=exclude), runtime, top_k=top_k, threshold=threshold, recheck=recheck
        )
        try:
            for record in records:
                if isinstance(record, Skipped):
                    counts.skipped += 1
                    if not quiet:
                        progress.log(f"skipped {record.path}: {record.reason}")
                    if fail_log:
                        fail_log.write(record)
                    if strict:
                        raise ZsclipError(f"{record.path}: {record.reason} (--strict stops at the first bad file)")
                elif record.path not in written:  # sorted only now, but in --output already
                    counts.done += 1
                    if exif:
                        record.extra.update(_exif_columns(record.path, facts))
                    if writer:
                        writer.write(record)
                    if out_file:
                        out_file.tick()
                # The record is written (flushed) before its file moves: a kill in between leaves the image at
                # its source, so a resume classifies and sorts it again; the other order could lose its record.
                place = sorter.add(record) if sorter else None
                if gallery:
                    gallery.add(record, image=None if dry_run else place)
                moved = place if place is not None and sorter.mode == "move" and not dry_run else None
                for sink in sinks:
                    sink.add(record, moved)  # a moved photo is tagged where it is now
                if bar:
                    bar.update(0, advance=1, extra=f"{counts.skipped} skipped" if counts.skipped else "")
            if writer:
                writer.close()
            if counts.done + counts.resumed + (sorter.resumed if sorter else 0) == 0:
                if counts.skipped:
                    raise ZsclipError(f"no image could be read: {all_skipped(counts.skipped)}")
                shard = read.shard
                if shard:  # one job of an array may get no file: that is a finished job, not a failure
                    progress.log(f"note: shard {shard[0]}/{shard[1]} holds none of these files")
        except BaseException as exc:
            if writer and fmt == "json":
                writer.close()  # the records before the failure stay a valid JSON array
            if out_file:
                out_file.abandon()
                if counts.done or out_file.done:
                    kept = counts.resumed + counts.done
                    how = "--resume" if fmt in RESUMABLE else f"a {fmt} file cannot be resumed; csv and jsonl can"
                    progress.log(f"kept {kept} finished records in {out_file.partial} ({how})")
                else:
                    out_file.discard()
            if isinstance(exc, OSError) and is_disk_full(exc):
                raise ZsclipError(f"{output or 'output'}: the disk is full ({exc}); free space, then --resume") from exc
            raise
        if out_file:
            out_file.finish()
    counts.rechecked = recheck.rechecked
    return counts


def _exif_columns(path: str, table: FactsTable) -> dict:
    """taken, camera and gps of one photo (EXIF, kept in the cache by zsclip.photos.facts)."""
    facts, _ = facts_of([path], table)
    found = facts.get(os.path.abspath(path))
    return found.to_dict() if found else {"taken": None, "camera": None, "gps": None}


class _Both:
    """Paths in both containers: with --output and --sort-into resumed together, an image is left out only when
    both have it (the sort may have placed it after the output wrote it, or the other way round)."""

    def __init__(self, a, b):
        self.a, self.b = a, b

    def __contains__(self, path: object) -> bool:
        return path in self.a and path in self.b


def _finished(out_file, sorter):
    """What a resumed run leaves out of classification (and the sort's own folder, which the walk never enters)."""
    if out_file is not None and sorter is not None:
        return Exclude(_Both(out_file.done, sorter.exclude), sorter.exclude.folders)
    if out_file is not None:
        return out_file.done
    return sorter.exclude if sorter is not None else ()
