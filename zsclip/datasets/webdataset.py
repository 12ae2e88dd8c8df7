"""CLIP_benchmark's webdataset data sets: `wds:DIR` (a copy on disk) and `wds/NAME` (the clip-benchmark/wds_*
repositories on the Hugging Face hub, downloaded into the zsclip cache on first use), read in place.

The layout, as clip_benchmark.datasets.builder.build_wds_dataset reads it:
    DIR/<split>/nshards.txt                      N: the shards are <split>/0.tar ... <split>/N-1.tar
    DIR/classnames.txt                           one class name per line (classification)
    DIR/zeroshot_classification_templates.txt    the data set's own templates, {c} where the class name goes
    DIR/dataset_type.txt                         'retrieval' for caption sets; missing: classification
Inside a shard, consecutive members sharing a key (the name up to the first dot of the base name) form a sample,
suffixes lowercased, as webdataset groups them; the first of .webp .png .jpg .jpeg is the sample's image, `.cls`
its class index, `.txt` its captions (one per line). Each image becomes the address SHARD.tar#MEMBER
(zsclip.store.shards), so samples go through the same decoding workers, limits, skip rules and image-embedding store as
files. Samples that cannot be used at all (no image, no class) are left out with a note naming them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from zsclip.core.errors import UsageError, ZsclipError
from zsclip.core.progress import log
from zsclip.core.textfiles import read_text
from zsclip.core.wording import plural
from zsclip.datasets.base import EvalDataset, check_names, classnames_option
from zsclip.store.cache import cache_dir
from zsclip.store.shards import member_address, sample_key, shard_index, tar_name
from zsclip.zeroshot.prompts import TemplateSet, parse_templates

IMAGE_SUFFIXES = ("webp", "png", "jpg", "jpeg")  # CLIP_benchmark's order: the first one present is the image


TASKS = ("classification", "retrieval")


HUB_ORG = "clip-benchmark"


_SHOWN = 3  # samples named in a note


@dataclass
class RetrievalSet:
    """A caption data set: per image (a member address), its captions. `images`, `captions` and `caption_image`
    are the columns a retrieval evaluator scores (zsclip.evaluate.recall.CaptionData's fields)."""

    name: str
    items: list[tuple[str, list[str]]]  # (image address, captions)
    source: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def images(self) -> list[str]:
        return [image for image, _ in self.items]

    @property
    def captions(self) -> list[str]:
        return [c for _, captions in self.items for c in captions]

    @property
    def caption_image(self) -> list[int]:
        return [i for i, (_, captions) in enumerate(self.items) for _ in captions]

    def limit(self, n: int | None) -> RetrievalSet:
        """The first n images with their captions."""
        if n is None or n >= len(self.items):
            return self
        return RetrievalSet(self.name, self.items[:n], self.source, [*self.notes])


def is_wds(name: str) -> bool:
    return name.startswith(("wds:", "wds/"))


def hub_repo(name: str) -> str:
    """CLIP_benchmark's hub repository for a data set name: vtab/flowers -> clip-benchmark/wds_vtab-flowers."""
    return f"{HUB_ORG}/wds_{name.replace('/', '-')}"


def hub_url(name: str) -> str:
    from huggingface_hub import constants

    return f"{constants.ENDPOINT.rstrip('/')}/datasets/{hub_repo(name)}"


def layout(split: str) -> str:
    return (
        f"DIR/{split}/nshards.txt, DIR/{split}/0.tar ..., DIR/classnames.txt and "
        "DIR/zeroshot_classification_templates.txt (or DIR/dataset_type.txt = retrieval)"
    )


def load_wds(
    spec: str,
    *,
    root: str | os.PathLike | None = None,
    split: str = "test",
    classnames: str | None = None,
    task: str | None = None,
) -> EvalDataset | RetrievalSet:
    """`wds:DIR` or `wds/NAME` as a classification data set (EvalDataset) or a caption set (RetrievalSet).

    `task` (classification or retrieval) overrides DIR/dataset_type.txt; `classnames` (a built-in list or a
    file) overrides DIR/classnames.txt; `root` is an existing copy of a `wds/NAME` data set (no download)."""
    if task is not None and task not in TASKS:
        raise UsageError(f"--task {task}: use {' or '.join(TASKS)}")
    if not split or split in (".", "..") or "/" in split or "\\" in split:
        raise UsageError(f"--split {split!r}: give a split's folder name, such as test or train")
    return read_wds(_directory(spec, root, split), spec, split=split, classnames=classnames, task=task)


def wds_task(spec: str, *, root: str | os.PathLike | None = None, split: str = "test") -> str:
    """classification or retrieval, as the data set's dataset_type.txt says (downloading `wds/NAME` first)."""
    return _dataset_type(_directory(spec, root, split), spec)


def _directory(spec: str, root: str | os.PathLike | None, split: str) -> Path:
    if spec.startswith("wds:"):
        directory = Path(spec[4:]).expanduser()
        if not spec[4:] or not directory.is_dir():
            raise UsageError(f"{spec}: no such folder (a webdataset data set is {layout(split)})")
        return directory
    if spec.startswith("wds/") and spec[4:].strip("/"):
        return locate(spec[4:].strip("/"), root, split)
    raise UsageError(f"{spec}: name a data set (wds/cifar10, wds/vtab/flowers) or a folder (wds:DIR)")


def read_wds(
    directory: Path, name: str, *, split: str = "test", classnames: str | None = None, task: str | None = None
) -> EvalDataset | RetrievalSet:
    """The samples of `directory` (CLIP_benchmark's layout), named `name` in notes and errors."""
    shards = _shards(directory, split, name)
    kind = task or _dataset_type(directory, name)
    notes: list[str] = []
    want = "cls" if kind == "classification" else "txt"
    samples = list(_samples(shards, directory, want, notes))
    if kind == "retrieval":
        items = [(image, data.decode("utf-8", errors="replace").splitlines()) for image, _, data in samples]
        return RetrievalSet(name, items, str(directory), notes)
    names = _classnames(directory, name, classnames, notes)
    items = []
    for image, where, data in samples:
        label = int(data)
        if not 0 <= label < len(names):
            raise UsageError(
                f"{name}: {where} has class {label}, out of range: there are {len(names)} class names "
                f"(0..{len(names) - 1})"
            )
        items.append((image, label))
    return EvalDataset(name, names, items, _templates(directory, notes), str(directory), notes)


def _shards(directory: Path, split: str, name: str) -> list[Path]:
    count_file = directory / split / "nshards.txt"
    if not count_file.is_file():
        splits = sorted(d.name for d in directory.iterdir() if (d / "nshards.txt").is_file())
        found = f"; its splits: {', '.join(splits)} (--split)" if splits else f"; expected {layout(split)}"
        raise UsageError(f"{name}: no split {split!r} ({split}/nshards.txt is missing){found}")
    text = read_text(count_file).strip()
    if not (text.isascii() and text.isdigit() and int(text) > 0):
        raise UsageError(f"{count_file}: holds {text[:40]!r}, not the number of shards")
    shards = [directory / split / f"{i}.tar" for i in range(int(text))]
    missing = [s for s in shards if not s.is_file()]
    if missing:
        raise UsageError(
            f"{name}: {missing[0].relative_to(directory)} is missing ({split}/nshards.txt lists {len(shards)} "
            f"shards, {len(missing)} missing); download the data set again or fix nshards.txt"
        )
    return shards


def _dataset_type(directory: Path, name: str) -> str:
    path = directory / "dataset_type.txt"
    kind = read_text(path).strip().lower() if path.is_file() else "classification"
    if kind not in TASKS:
        raise UsageError(
            f"{name}: dataset_type.txt says {kind!r}; zsclip scores classification and retrieval data sets"
        )
    return kind


def _samples(shards: list[Path], directory: Path, want: str, notes: list[str]):
    """(image address, where, bytes of the `want` member) per usable sample, in shard order; the rest noted."""
    no_image: list[str] = []
    no_want: list[str] = []
    for shard in shards:
        shown = os.path.relpath(shard, directory)
        try:
            index = shard_index(str(shard))
            f = open(shard, "rb")  # noqa: SIM115 -- closed by the with below; opened here to report one error
        except OSError as exc:
            raise ZsclipError(f"{directory}: cannot read shard {shown} ({exc.strerror or exc})") from exc
        if index.error:
            notes.append(f"shard {shown} is {index.error}; the samples after that are left out")
        elif index.ended_early:
            notes.append(
                f"shard {shown} ends early: the file stops after {plural(len(index.members), 'member')} without "
                "tar's end-of-archive marker (cut short in a copy or download?); the samples it held after that "
                "are missing, so this is not the whole data set"
            )
        with f:
            groups = list(_group(index, shown))
            for n, (key, members) in enumerate(groups):
                image = next((members[s] for s in IMAGE_SUFFIXES if s in members), None)
                where = f"sample {key} of shard {shown}"
                cut = index.ended_early and n == len(groups) - 1  # the last sample of a cut shard: cut off too
                if image is None:
                    (no_image if not cut else notes).append(where if not cut else f"{where} is cut off by its end")
                    continue
                data = _read(f, index, members.get(want))
                if data is None or (want == "cls" and not _is_label(data)):
                    (no_want if not cut else notes).append(where if not cut else f"{where} is cut off by its end")
                    continue
                yield member_address(shard, image), where, data
    if no_image:
        notes.append(_left_out(no_image, "no image (.webp .png .jpg .jpeg)"))
    if no_want:
        what = "no class index (.cls)" if want == "cls" else "no captions (.txt)"
        notes.append(_left_out(no_want, what))


def _group(index, shown: str):
    """(key, {suffix: member address name}) for runs of members with the same key, as webdataset's group_by_keys
    reads them: a key seen again after other keys (a shard appended to with `tar -r`) is a sample of its own, and a
    suffix twice in one run is an error, as it is there ('duplicate file name in tar file')."""
    key, group = None, {}
    for address in index.members:
        name = tar_name(address, index)
        base = name.rsplit("/", 1)[-1]
        if base.startswith("__") or "." not in base:  # webdataset's metadata files; names with no suffix
            continue
        this = sample_key(name)
        suffix = name[len(this) + 1 :].lower()
        if this != key:
            if group:
                yield key, group
            key, group = this, {}
        if suffix in group:
            raise UsageError(
                f"shard {shown}: sample {this} has two .{suffix} members in a row (webdataset refuses it too: "
                "'duplicate file name in tar file'); rewrite the shard"
            )
        group[suffix] = address
    if group:
        yield key, group


def _read(f, index, member: str | None) -> bytes | None:
    if member is None:
        return None
    offset, size = index.members[member]
    f.seek(offset)
    data = f.read(size)
    return data if len(data) == size else None


def _is_label(data: bytes) -> bool:
    text = data.strip()
    return text.isdigit() or (text[:1] == b"-" and text[1:].isdigit())


def _left_out(where: list[str], what: str) -> str:
    more = f" and {len(where) - _SHOWN} more" if len(where) > _SHOWN else ""
    return f"{plural(len(where), 'sample')} with {what} {'is' if len(where) == 1 else 'are'} left out: " + (
        f"{'; '.join(where[:_SHOWN])}{more}"
    )


def _classnames(directory: Path, name: str, classnames: str | None, notes: list[str]) -> list[str]:
    if classnames is not None:
        names = classnames_option(classnames)
        notes.append(f"class names from --classnames {classnames}")
    else:
        path = directory / "classnames.txt"
        if not path.is_file():
            raise UsageError(
                f"{name}: classnames.txt is missing (a classification data set needs it; or give --classnames, "
                "or --task retrieval for a caption set)"
            )
        names = [line.strip() for line in read_text(path).splitlines()]  # as CLIP_benchmark reads it
    check_names(names, f"class names of {name}", notes)
    return names


def _templates(directory: Path, notes: list[str]) -> TemplateSet | None:
    path = directory / "zeroshot_classification_templates.txt"
    if not path.is_file():
        notes.append("no zeroshot_classification_templates.txt: --templates default uses the model's own set")
        return None
    description, templates = parse_templates(read_text(path), str(path))
    return TemplateSet("dataset", description or f"the data set's own templates ({path})", templates)


def locate(name: str, root: str | os.PathLike | None, split: str) -> Path:
    """The folder holding `wds/NAME`: under --root (no download), else the zsclip cache, downloaded once."""
    repo = hub_repo(name)
    if root is not None:
        base = Path(root).expanduser()
        for candidate in (base, base / repo.split("/")[1], base / name):
            if (candidate / split / "nshards.txt").is_file():
                return candidate
        raise UsageError(f"wds/{name}: not found under --root {base}; expected {layout(split)}")
    target = cache_dir() / "datasets" / "wds" / name.replace("/", "-")
    done = target / f".zsclip-{split}-complete"
    if not done.is_file():
        download(name, target, split)
        done.write_text(f"{repo} {split}\n", encoding="utf-8")
    return target


def download(name: str, target: Path, split: str) -> None:
    """Fetch the split's shards and the text files into `target` with huggingface_hub: progress bars on stderr,
    and a download that was cut resumes where it stopped."""
    from huggingface_hub import snapshot_download

    url = hub_url(name)
    log(f"downloading {url} ({split} split) into {target}")
    try:
        snapshot_download(hub_repo(name), repo_type="dataset", local_dir=target, allow_patterns=[f"{split}/*", "*.txt"])
    except Exception as exc:  # httpx, hub and file errors alike: the user needs the URL and the way around
        raise ZsclipError(
            f"wds/{name}: cannot download {url} ({_reason(exc)}); fetch it elsewhere (git clone {url}) and pass "
            f"--root DIR with {layout(split)}"
        ) from exc
    if not (target / split / "nshards.txt").is_file():
        raise ZsclipError(f"wds/{name}: {url} has no {split}/nshards.txt; is {split!r} one of its splits?")


def _reason(exc: BaseException) -> str:
    """The innermost cause, in one line: 'Connection refused' rather than the hub client's paragraph."""
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]
