"""The evaluation data set (image, class index) items with class names and a default template set, and the
class-name lists and checks every kind of data set shares."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from importlib import resources

from zsclip.zeroshot.prompts import check_classnames, read_classes_file


@dataclass
class EvalDataset:
    name: str
    classnames: list[str]
    items: list[tuple[str, int]]  # (image path, true class index)
    templates: str | None = None  # the data set's own template set, if it has one
    source: str = ""
    notes: list[str] = field(default_factory=list)

    def limit(self, n: int | None) -> EvalDataset:
        """A stratified subset: classes take turns, in order, until n images are picked."""
        if n is None or n >= len(self.items):
            return self
        per_class: dict[int, list[tuple[str, int]]] = defaultdict(list)
        for item in self.items:
            per_class[item[1]].append(item)
        picked: list[tuple[str, int]] = []
        depth = 0
        while len(picked) < n:
            for label in sorted(per_class):
                if depth < len(per_class[label]) and len(picked) < n:
                    picked.append(per_class[label][depth])
            depth += 1
        order = {item: i for i, item in enumerate(self.items)}
        picked.sort(key=order.__getitem__)
        return EvalDataset(self.name, self.classnames, picked, self.templates, self.source, [*self.notes])


def builtin_classnames(name: str) -> list[str] | None:
    """imagenet (open_clip's curated CLIP names), cifar10, cifar100 and shapes, else None."""
    if name == "imagenet":
        from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES  # open_clip's curated CLIP names

        return list(IMAGENET_CLASSNAMES)
    entry = resources.files("zsclip.prompt_files") / "classes" / f"{name}.txt"
    if entry.is_file():
        return [line.strip() for line in entry.read_text(encoding="utf-8").splitlines() if line.strip()]
    return None


def classnames_option(value: str) -> list[str]:
    names = builtin_classnames(value)
    if names is not None:
        return names

    return read_classes_file(value, "--classnames")


def check_names(names: list[str], source: str, notes: list[str]) -> None:
    """Data sets may repeat a name (CLIP's curated ImageNet names do: 'missile', 'sunglasses'); scoring is by
    index, so a repeat is a note, while empty names or a single class are errors."""
    from collections import Counter

    repeated = sorted(n for n, k in Counter(names).items() if k > 1)
    if repeated:
        notes.append(f"repeated class names (scored by index): {', '.join(repeated)}")
    check_classnames(names, source)
