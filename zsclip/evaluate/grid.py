"""Several models x several data sets: every pair scored once, each model loaded once, results appended to
results.jsonl as each pair finishes so a killed grid resumes where it stopped, and a leaderboard at the end.

A pair that fails (a data set missing offline, a model that cannot load) becomes a row with its error and does not
stop the grid; a rerun tries failed pairs again and skips the ones that finished with the same options."""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from zsclip.backends import load_model
from zsclip.classify.recheck import Recheck
from zsclip.core import progress
from zsclip.core.errors import UsageError, ZsclipError
from zsclip.core.locks import Lock
from zsclip.core.wording import plural
from zsclip.datasets import captions_file, dataset_identity, load_captions, load_dataset, wds_task
from zsclip.engines import ReadOptions, Runtime
from zsclip.evaluate.recall import RetrievalResult, check_recall_k, evaluate_retrieval, summary_dict
from zsclip.evaluate.run import embed_dataset, resolve_dataset_templates, score, summary
from zsclip.models import fingerprint_spec
from zsclip.store.cache import Cache
from zsclip.zeroshot.classifier import build_classifier

RESULTS = "results.jsonl"
LOCK = ".zsclip-grid.lock"


@dataclass
class GridOptions:
    """Everything but the model and the data set that changes a pair's numbers (part of its resume key).
    Give fields by name: run_grid fills precision, backend and read."""

    templates: str = "default"
    task: str | None = None
    root: str | None = None
    classnames: str | None = None
    limit: int | None = None
    exact: bool = False
    recall_k: str = "1,5,10"
    precision: str | None = None  # as asked (None: the device's default)
    backend: str | None = None  # --backend as asked (None: the default); each row names the one that computed it
    read: dict | None = None  # the reading options that change vectors (max_pixels)
    split: str = "test"

    def key(self) -> dict:
        # The default split is left out, so rows written before --split existed still resume.
        return {k: v for k, v in self.__dict__.items() if not (k == "split" and v == "test")}


_RESULT_OPTIONS = ("max_pixels",)  # reading options that change which images are scored


def dataset_key(name: str, options: GridOptions) -> str:
    """What a data set name stands for in a resume key: its identity now (zsclip.datasets.dataset_identity: the
    files it is made of, by the identity rule), so a data set whose images changed, from another working
    directory or not, is scored again rather than resumed from a row made from other files."""

    templates = options.templates if options.templates != "default" else None
    return dataset_identity(
        name, root=options.root, split=options.split, classnames=options.classnames, templates=templates
    )


def read_lines(path: Path, what: str) -> list[str]:
    """One model spec or data set per line (`--models FILE`, `--datasets FILE`); '#' starts a comment."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--{what} {path}: cannot read it ({exc})") from exc
    lines = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    found = [line for line in lines if line]
    if not found:
        raise UsageError(f"--{what} {path}: no {what} listed (one per line)")
    return found


def slug(text: str) -> str:
    """A folder name for a model spec or data set: readable, safe, and unique through a short hash."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", os.path.basename(text.rstrip("/\\")) or text).strip("._")[:60]
    return f"{readable or 'x'}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def done_pairs(report: Path | None, options: GridOptions) -> dict[tuple[str, str], dict]:
    """(fingerprint, data set) -> row, for the pairs results.jsonl already holds with these options."""
    if report is None or not (report / RESULTS).is_file():
        return {}
    done = {}
    with open(report / RESULTS, encoding="utf-8") as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a torn last line of a killed run
                continue
            if row.get("error") is None and row.get("options") == options.key() and row.get("dataset_identity"):
                done[(row["fingerprint"], row["dataset_identity"])] = row
    return done


def run_grid(
    models: list[str],
    datasets: list[str],
    options: GridOptions,
    *,
    report: Path | None = None,
    device: str = "auto",
    precision: str | None = None,
    backend: str | None = None,
    read: ReadOptions | None = None,
    runtime: Runtime | None = None,
    evaluate_pair: Callable | None = None,
    on_row: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Score every (model, data set) pair; rows in the order of the grid, each appended to results.jsonl in
    `report` as it finishes (a rerun resumes from there). `evaluate_pair(clip, dataset, options, folder, cache,
    read, runtime)` returns a row's summary (default: score_pair, which writes no pair report;
    zsclip.evaluate.leaderboard's
    report_pair writes one into `folder`)."""

    evaluate_pair = evaluate_pair or score_pair
    cache = Cache()
    options.read = {k: getattr(read, k) for k in _RESULT_OPTIONS} if read is not None else {}
    read = read or ReadOptions()
    options.precision = precision
    options.backend = backend
    lock = None
    if report is not None:
        report.mkdir(parents=True, exist_ok=True)
        lock = Lock(report / LOCK, f"--report {report}").acquire()  # one grid at a time writes results.jsonl
    try:
        return _run(
            models, datasets, options, report, device, precision, backend, (read, runtime), evaluate_pair, on_row, cache
        )
    finally:
        if lock is not None:
            lock.release()


def _run(models, datasets, options, report, device, precision, backend, read, evaluate_pair, on_row, cache):

    done = done_pairs(report, options)
    rows: list[dict] = []
    keys = {d: dataset_key(d, options) for d in datasets}
    for spec in models:
        try:
            fingerprint = fingerprint_spec(spec, cache)
        except ZsclipError as exc:
            rows += [_emit(report, _failed(spec, None, d, options, exc), on_row) for d in datasets]
            continue
        todo = [d for d in datasets if (fingerprint, keys[d]) not in done]
        rows += [
            {**done[(fingerprint, keys[d])], "model": spec, "dataset": d, "resumed": True}
            for d in datasets
            if d not in todo
        ]
        if not todo:
            continue
        try:
            clip = load_model(spec, device=device, precision=precision, backend=backend, cache=cache, show=False)
        except ZsclipError as exc:
            rows += [_emit(report, _failed(spec, fingerprint, d, options, exc), on_row) for d in todo]
            continue
        for name in todo:
            start = time.perf_counter()
            folder = report / "pairs" / f"{slug(spec)}__{slug(name)}" if report else None
            try:
                summary = evaluate_pair(clip, name, options, folder, cache, *read)
            except ZsclipError as exc:
                rows.append(_emit(report, _failed(spec, fingerprint, name, options, exc), on_row))
                continue
            row = {
                **clip.computed_by(),
                "model": spec,
                "dataset": name,
                "task": summary.get("task", "classification"),
                "templates": summary.get("templates"),
                "n": summary.get("images"),
                "metrics": summary["metrics"],
                "seconds": round(time.perf_counter() - start, 3),
                "report": str(folder) if folder else None,
                "options": options.key(),
                "dataset_identity": keys[name],
                "error": None,
            }
            rows.append(_emit(report, row, on_row))
    order = {(m, d): i for i, (m, d) in enumerate((m, d) for m in models for d in datasets)}
    rows.sort(key=lambda r: order.get((r["model"], r["dataset"]), len(order)))
    return rows


def pair_result(clip, name: str, options: GridOptions, cache, read: ReadOptions, runtime: Runtime | None = None):
    """Score one pair: an EvalResult for a classification data set, a RetrievalResult for a caption set."""
    if task_of(name, options.task, options.root, options.split) == "retrieval":
        data, ks = retrieval_data(name, options.recall_k, root=options.root, split=options.split)
        return evaluate_retrieval(clip, data, ks, read.but(exact=options.exact), runtime)

    data = load_dataset(
        name, root=options.root, classnames=options.classnames, split=options.split, task=options.task
    ).limit(options.limit)
    if not data.items:
        raise ZsclipError(f"{name}: no images found")
    clf = build_classifier(clip, data.classnames, resolve_dataset_templates(options.templates, data, clip), cache=cache)
    read = read.but(exact=options.exact)
    return score(embed_dataset(clip, data, read, runtime), clf, recheck=Recheck(clip, clf, read))


def score_pair(
    clip, name: str, options: GridOptions, folder: Path | None, cache, read: ReadOptions, runtime: Runtime | None = None
) -> dict:
    """A pair's summary (its metrics), with no report written (`folder` is not used)."""

    result = pair_result(clip, name, options, cache, read, runtime)
    if isinstance(result, RetrievalResult):
        return summary_dict(result, clip)
    return summary(result, clip)


def task_of(name: str, task: str | None, root: str | None = None, split: str = "test") -> str:
    """The task a data set is scored for: --task, else a webdataset's dataset_type.txt, else retrieval for a
    captions layout (a CSV with filepath and caption columns, or a folder holding one as captions.csv), else
    classification."""
    if task is None and name.startswith(("wds:", "wds/")):
        return wds_task(name, root=root, split=split)
    if task is None:
        return "retrieval" if captions_file(name) is not None else "classification"
    return task


def retrieval_data(dataset: str, recall_k: str, *, root: str | None = None, split: str = "test"):
    """A captions data set and the K of recall@K (`--recall-k 1,5,10`), checked: (CaptionData, [K...])."""

    try:
        ks = check_recall_k([int(k) for k in recall_k.split(",") if k.strip()])
    except ValueError:
        raise UsageError(f"--recall-k {recall_k}: give comma-separated integers such as 1,5,10") from None
    return load_captions(dataset, root=root, split=split), ks


def _failed(spec: str, fingerprint: str | None, dataset: str, options: GridOptions, exc: Exception) -> dict:
    return {
        "model": spec,
        "fingerprint": fingerprint,
        "dataset": dataset,
        "task": options.task or "classification",
        "templates": options.templates,
        "n": 0,
        "metrics": {},
        "seconds": 0.0,
        "report": None,
        "options": options.key(),
        "error": str(exc),
    }


def _emit(report: Path | None, row: dict, on_row: Callable[[dict], None] | None) -> dict:
    """Append the row to results.jsonl durably before going on: a kill loses at most the pair in progress."""
    if report is not None:
        with open(report / RESULTS, "a", encoding="utf-8") as f:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
    if on_row:
        on_row(row)
    return row


def summarise(rows: list[dict]) -> None:
    failed = [r for r in rows if r["error"]]
    resumed = sum(1 for r in rows if r.get("resumed"))
    note = f" ({resumed} from an earlier run)" if resumed else ""
    progress.log(f"grid: {len(rows) - len(failed)} of {plural(len(rows), 'pair')} scored{note}, {len(failed)} failed")
    for r in failed:
        progress.log(f"failed: {r['model']} x {r['dataset']}: {r['error']}")
