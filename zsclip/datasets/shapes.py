"""A synthetic image-caption world: one coloured shape on a plain, gradient or noisy background.

Six colours x six shapes = 36 compositions. Six of them are held out of every training caption and image, while
each colour and each shape still appears in training; a model that labels them correctly has learned words, not
strings. `write_dataset` writes `captions.csv` (filepath,caption: open_clip's CsvDataset layout) and an
evaluation split `eval/<colour> <shape>/*.png` for all 36 compositions, drawn with a separate seed.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from zsclip.core import atomic
from zsclip.core.errors import UsageError, ZsclipError
from zsclip.core.paths import check_output_dir, writing
from zsclip.core.progress import log
from zsclip.core.wording import plural

COLOURS = {
    "red": (215, 35, 35),
    "green": (40, 165, 55),
    "blue": (40, 75, 220),
    "yellow": (240, 215, 35),
    "purple": (135, 50, 170),
    "orange": (250, 135, 20),
}
SHAPES = ("circle", "square", "triangle", "star", "cross", "hexagon")
HELD_OUT = frozenset(
    {
        ("red", "star"),
        ("green", "hexagon"),
        ("blue", "cross"),
        ("yellow", "circle"),
        ("purple", "square"),
        ("orange", "triangle"),
    }
)
COMPOSITIONS = tuple((c, s) for c in COLOURS for s in SHAPES)
SEEN = tuple(cs for cs in COMPOSITIONS if cs not in HELD_OUT)
BACKGROUNDS = ("plain", "gradient", "noisy")
# Low-saturation backgrounds, so the shape's colour is the only strong hue in the picture.
_BACKGROUND_TONES = {"white": (238, 238, 238), "grey": (150, 150, 150), "dark": (55, 55, 60), "beige": (225, 215, 195)}


def classname(colour: str, shape: str) -> str:
    return f"{colour} {shape}"


@dataclass(frozen=True)
class Scene:
    colour: str
    shape: str
    background: str  # plain | gradient | noisy
    tone: str  # background tone name
    scale: float  # shape radius as a fraction of the image size
    cx: float
    cy: float
    angle: float

    @property
    def size_word(self) -> str:
        return "small" if self.scale < 0.22 else "large" if self.scale > 0.32 else ""

    @property
    def position(self) -> str:
        col = "left" if self.cx < 0.4 else "right" if self.cx > 0.6 else ""
        row = "top" if self.cy < 0.4 else "bottom" if self.cy > 0.6 else ""
        if not row and not col:
            return "in the center"
        if row and col:
            return f"in the {row} {col}"
        return f"on the {col}" if col else f"at the {row}"


def sample_scene(rng: np.random.Generator, colour: str, shape: str) -> Scene:
    scale = float(rng.uniform(0.16, 0.38))
    margin = scale + 0.04
    return Scene(
        colour,
        shape,
        BACKGROUNDS[rng.integers(len(BACKGROUNDS))],
        list(_BACKGROUND_TONES)[rng.integers(len(_BACKGROUND_TONES))],
        scale,
        float(rng.uniform(margin, 1 - margin)),
        float(rng.uniform(margin, 1 - margin)),
        float(rng.uniform(0, 2 * math.pi)),
    )


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    if shape == "square":
        pts = [(math.cos(a), math.sin(a)) for a in (math.pi / 4 + k * math.pi / 2 for k in range(4))]
    elif shape == "triangle":
        pts = [(math.cos(a), math.sin(a)) for a in (-math.pi / 2 + k * 2 * math.pi / 3 for k in range(3))]
    elif shape == "hexagon":
        pts = [(math.cos(a), math.sin(a)) for a in (k * math.pi / 3 for k in range(6))]
    elif shape == "star":
        pts = [
            ((1.0 if k % 2 == 0 else 0.42) * math.cos(a), (1.0 if k % 2 == 0 else 0.42) * math.sin(a))
            for k, a in enumerate(-math.pi / 2 + k * math.pi / 5 for k in range(10))
        ]
    elif shape == "cross":
        w = 0.32
        pts = [
            (w, 1),
            (w, w),
            (1, w),
            (1, -w),
            (w, -w),
            (w, -1),
            (-w, -1),
            (-w, -w),
            (-1, -w),
            (-1, w),
            (-w, w),
            (-w, 1),
        ]
    else:
        raise ValueError(shape)
    ca, sa = math.cos(angle), math.sin(angle)
    return [(cx + r * (x * ca - y * sa), cy + r * (x * sa + y * ca)) for x, y in pts]


def _background(scene: Scene, size: int, rng: np.random.Generator) -> Image.Image:
    tone = np.array(_BACKGROUND_TONES[scene.tone], dtype=np.float32)
    if scene.background == "plain":
        return Image.new("RGB", (size, size), tuple(int(v) for v in tone))
    if scene.background == "gradient":
        other = np.array(list(_BACKGROUND_TONES.values())[rng.integers(len(_BACKGROUND_TONES))], dtype=np.float32)
        t = np.linspace(0, 1, size, dtype=np.float32)
        ramp = t[None, :, None] if rng.random() < 0.5 else t[:, None, None]
        arr = tone * (1 - ramp) + other * ramp
        arr = np.broadcast_to(arr, (size, size, 3))
    else:
        arr = tone + rng.normal(0, 28, (size, size, 1)).astype(np.float32)
        arr = np.broadcast_to(arr, (size, size, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def render(scene: Scene, size: int, rng: np.random.Generator) -> Image.Image:
    """Draw a scene, with slight colour jitter, blur and JPEG noise so no two images are pixel-identical."""
    im = _background(scene, size, rng)
    draw = ImageDraw.Draw(im)
    colour = tuple(int(np.clip(v + rng.normal(0, 12), 0, 255)) for v in COLOURS[scene.colour])
    cx, cy, r = scene.cx * size, scene.cy * size, scene.scale * size
    if scene.shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    else:
        draw.polygon(_polygon(scene.shape, cx, cy, r, scene.angle), fill=colour)
    if rng.random() < 0.5:
        im = im.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 0.9))))
    if rng.random() < 0.5:
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=int(rng.integers(40, 90)))
        im = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    return im


_CAPTIONS = (
    "{a} {c} {s}",
    "{c} {s}",
    "a picture of {a} {c} {s}",
    "a photo of {a} {c} {s}.",
    "{a} {size}{c} {s} {pos}",
    "a picture of {a} {c} {s} on {bg}",
    "{a} {c} {s} on {bg}",
    "there is {a} {c} {s} {pos}",
    "the {s} is {c}",
    "{a} {s} coloured {c}",
    "{a} {size}{c} {s}",
    "an image showing {a} {c} {s} {pos} on {bg}",
)
_BG_WORDS = {
    ("plain", "white"): "a white background",
    ("plain", "grey"): "a grey background",
    ("plain", "dark"): "a dark background",
    ("plain", "beige"): "a beige background",
}


def caption(scene: Scene, rng: np.random.Generator) -> str:
    """A varied caption that names colour and shape, so the text tower must learn the words themselves."""
    template = _CAPTIONS[rng.integers(len(_CAPTIONS))]
    size = f"{scene.size_word} " if scene.size_word else ""
    first = (size or scene.colour)[0] if "{size}" in template else scene.colour[0]
    article = "an" if first in "aeiou" else "a"
    bg = _BG_WORDS.get((scene.background, scene.tone), f"a {scene.background} background")
    return template.format(a=article, c=scene.colour, s=scene.shape, size=size, pos=scene.position, bg=bg)


def iter_training(n: int, seed: int) -> Iterator[Scene]:
    """n scenes of the 30 seen compositions, balanced, in a seeded random order."""
    rng = np.random.default_rng(seed)
    for i in rng.permutation(n):
        colour, shape = SEEN[i % len(SEEN)]
        yield sample_scene(rng, colour, shape)


def write_dataset(out: Path, n: int = 30_000, seed: int = 0, size: int = 64, eval_per_class: int = 30) -> dict:
    """Write the training images + captions.csv and the 36-class eval split into `out` (created if missing);
    returns counts. Files an earlier `data shapes` wrote there are removed first; anything else is refused."""
    out = check_output_dir(out, "data shapes")
    clear_previous(out)
    with writing(out, "data shapes"):
        return _write_dataset(out, n, seed, size, eval_per_class)


def _write_dataset(out: Path, n: int, seed: int, size: int, eval_per_class: int) -> dict:
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i, scene in enumerate(iter_training(n, seed)):
        name = f"images/{i:06d}.png"
        render(scene, size, rng).save(out / name, compress_level=1)
        rows.append((name, caption(scene, rng)))
    with atomic.atomic_open(out / "captions.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["filepath", "caption"])
        writer.writerows(rows)

    eval_rng = np.random.default_rng([seed, 1])  # a separate stream: eval scenes never repeat training ones
    for colour, shape in COMPOSITIONS:
        folder = out / "eval" / classname(colour, shape)
        folder.mkdir(parents=True, exist_ok=True)
        for j in range(eval_per_class):
            render(sample_scene(eval_rng, colour, shape), size, eval_rng).save(folder / f"{j:04d}.png")
    return {"train_images": n, "eval_images": eval_per_class * len(COMPOSITIONS), "classes": len(COMPOSITIONS)}


_EVAL_FOLDERS = "|".join(re.escape(classname(c, s)) for c, s in COMPOSITIONS)
_OWNED = re.compile(
    rf"captions\.csv|\.captions\.csv\.[^/]*\.tmp|images/\d{{6,}}\.png|eval/({_EVAL_FOLDERS})/\d{{4,}}\.png"
)
_OWNED_FOLDERS = re.compile(rf"images|eval|eval/({_EVAL_FOLDERS})")


def clear_previous(out: Path) -> int:
    """Make `out` ready for a new data set: refuse a file, or a folder holding anything `write_dataset` would not
    have written (so a user's files are never deleted); else delete what an earlier run wrote, so no stale image
    (another --n, --seed or --eval-per-class) mixes into the new set. Returns how many files were deleted."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: is a file; give a folder to write the data set into")
    if not out.is_dir():
        return 0
    files, folders = [], []
    for top, dirs, names in os.walk(out):
        for name, owned in [*((n, _OWNED) for n in names), *((d, _OWNED_FOLDERS) for d in dirs)]:
            path = Path(top, name)
            rel = path.relative_to(out).as_posix()
            if not owned.fullmatch(rel) or path.is_symlink():
                raise UsageError(
                    f"{out} is not empty and {rel!r} was not written by zsclip data shapes; "
                    "give a new or empty folder (zsclip replaces only a data set it wrote)"
                )
            (folders if owned is _OWNED_FOLDERS else files).append(path)
    try:
        for path in files:
            path.unlink()
        for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
            folder.rmdir()
    except OSError as exc:
        raise ZsclipError(f"{out}: cannot remove the earlier data set ({exc.strerror}: {exc.filename})") from exc
    if files:
        log(f"{out}: removed the {plural(len(files), 'file')} of the data set written there before")
    return len(files)
